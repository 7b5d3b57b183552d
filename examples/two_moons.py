"""Two moons with an MLP, Adam, L2 and early stopping; plots the decision boundary.

Run: python examples/two_moons.py [out_dir]   (writes out_dir/two_moons.png, default out/)
"""
import os
import sys

import numpy as np

import graphnn as gn


def two_moons(n: int, noise: float, rng: np.random.Generator):
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    X = np.stack([x, y], 1) + rng.normal(0, noise, (n, 2))
    return X, (~upper).astype(np.int64)


out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
rng = np.random.default_rng(0)
X, labels = two_moons(600, 0.1, rng)
Xv, lv = two_moons(200, 0.1, rng)

g = gn.Graph("moons", seed=0)
x = g.input("x", (None, 2))
y = g.input("y", (None,), dtype="int64")
logits = gn.nn.MLP([32, 32, 2], activation="tanh")(x)
loss = gn.softmax_cross_entropy(logits, y)
acc = gn.nn.train.accuracy(logits, y)

tr = gn.Trainer(loss, optimizer=gn.optim.Adam(lr=0.01), regularization=gn.nn.L2(1e-4))
hist = tr.fit({"x": X, "y": labels}, epochs=200, batch_size=64, seed=0, verbose=False,
              validation={"x": Xv, "y": lv}, metrics={"accuracy": acc},
              early_stopping=gn.EarlyStopping(patience=20))
val_acc = tr.evaluate({"x": Xv, "y": lv}, metrics={"accuracy": acc})["accuracy"]
print(f"epochs run: {len(hist.loss)}, validation accuracy {val_acc:.3f}")

import viz  # noqa: E402  (drawing is optional; training above needs only graphnn)

os.makedirs(out_dir, exist_ok=True)
predict = gn.compile(gn.softmax(logits))
fig = viz.plots.decision_boundary(predict, X, labels)
fig.savefig(os.path.join(out_dir, "two_moons.png"), dpi=80)
print("wrote", os.path.join(out_dir, "two_moons.png"))
