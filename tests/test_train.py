"""The Trainer: lecture 000's epoch loop, early stopping, checkpoints, bad data, divergence."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch

import graphnn as gn
from graphnn.nn import optim, schedules
from graphnn.nn.train import (DataError, DivergedError, EarlyStopping, History, Trainer,
                              accuracy, binary_accuracy)

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
XOR_Y = np.array([[0], [1], [1], [0]], float)


def xor_net(seed=1):
    """Lecture 001's 2-2-1 ReLU network."""
    g = gn.Graph("xor", seed=seed)
    x, y = g.input("x", (None, 2)), g.input("y", (None, 1))
    W1 = g.param("W1", (2, 2), init="he_normal")
    b1 = g.param("b1", value=np.zeros(2))
    W2 = g.param("W2", (2, 1), init="he_normal")
    b2 = g.param("b2", value=np.zeros(1))
    out = gn.relu(x @ W1 + b1) @ W2 + b2
    return g, out, gn.mse(out, y)


def mlp(seed=0, sizes=(2, 8, 1), act=gn.tanh, loss="mse"):
    g = gn.Graph("mlp", seed=seed)
    x, y = g.input("x", (None, sizes[0])), g.input("y", (None, sizes[-1]))
    h = x
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        h = h @ g.param(f"W{i}", (a, b), init="xavier_normal") + g.param(f"b{i}", value=np.zeros(b))
        if i < len(sizes) - 2:
            h = act(h)
    lossnode = gn.mse(h, y) if loss == "mse" else gn.bce_with_logits(h, y)
    return g, h, lossnode


def moons(n, noise, rng):
    t = rng.uniform(0, np.pi, n)
    lab = rng.integers(0, 2, n)
    X = np.stack([np.where(lab == 0, np.cos(t), 1 - np.cos(t)),
                  np.where(lab == 0, np.sin(t), 0.5 - np.sin(t))], 1)
    return X + rng.normal(0, noise, (n, 2)), lab[:, None].astype(float)


def regression_data(rng, n=24):
    X = rng.normal(size=(n, 2))
    return X, np.sin(X[:, :1]) + 0.5 * X[:, 1:]


def snapshot(tr):
    return {k: tr.graph.values[k].copy() for k in tr._tracked()}


# -- done-when: XOR and two moons ------------------------------------------------------------------

def test_xor_trains_to_zero_error_from_seeded_start():
    g, out, loss = xor_net(seed=1)
    tr = gn.Trainer(loss, optimizer=gn.optim.Adam(lr=0.05), backend="numpy")
    hist = tr.fit({"x": XOR_X, "y": XOR_Y}, epochs=300, batch_size=4, seed=0, verbose=False)
    pred = tr.predict(out, {"x": XOR_X})
    assert ((pred > 0.5) == XOR_Y).all()
    assert hist.loss[-1] < 1e-6 and len(hist) == 300 and hist.epochs[-1] == 300
    assert hist.loss[-1] < hist.loss[0]


def test_two_moons_trains_past_95_percent():
    rng = np.random.default_rng(0)
    X, Y = moons(300, 0.1, rng)
    Xv, Yv = moons(200, 0.1, rng)
    g, out, loss = mlp(seed=0, sizes=(2, 16, 16, 1), loss="bce")
    acc = binary_accuracy(out, g["y"], threshold=0.0)
    tr = gn.Trainer(loss, optimizer=gn.optim.Adam(lr=0.02), regularization=gn.nn.L2(1e-5))
    hist = tr.fit({"x": X, "y": Y}, epochs=60, batch_size=32, seed=0,
                  validation={"x": Xv, "y": Yv}, metrics={"acc": acc}, verbose=False)
    assert hist.val_metrics["acc"][-1] > 0.95 and hist.metrics["acc"][-1] > 0.95
    pred = tr.predict(out, {"x": Xv})
    assert np.mean((pred > 0) == (Yv > 0.5)) == pytest.approx(hist.val_metrics["acc"][-1])
    assert tr.evaluate({"x": Xv, "y": Yv}, metrics={"acc": acc})["acc"] > 0.95


# -- the epoch loop of lecture 000 -----------------------------------------------------------------

@pytest.mark.parametrize("shuffle, drop_last", [(True, False), (False, False), (True, True)])
def test_fit_is_shuffle_then_consecutive_minibatches(rng, shuffle, drop_last):
    """fit equals a hand-written loop: permute each epoch with the seeded generator,
    cut into consecutive blocks of batch_size (last one partial unless drop_last)."""
    X, Y = regression_data(rng, n=12)
    _, _, loss = mlp(seed=3)
    tr = Trainer(loss, optimizer=optim.SGD(lr=0.1, momentum=0.9))
    tr.fit({"x": X, "y": Y}, epochs=3, batch_size=5, shuffle=shuffle, seed=11,
           drop_last=drop_last, verbose=False)
    g2, _, loss2 = mlp(seed=3)
    opt = optim.SGD(lr=0.1, momentum=0.9)
    ps = [p for p in g2.params]
    prog = gn.compile([loss2], updates=opt.build(ps, gn.grad(loss2, ps)))
    gen, steps = np.random.default_rng(11), 0
    for _ in range(3):
        order = gen.permutation(12) if shuffle else np.arange(12)
        for lo in range(0, 10 if drop_last else 12, 5):
            idx = order[lo:lo + 5]
            prog(x=X[idx], y=Y[idx])
            steps += 1
    assert tr.global_step == steps == (6 if drop_last else 9)
    for name, arr in snapshot(tr).items():
        np.testing.assert_array_equal(arr, g2.values[name], err_msg=name)


def test_epoch_schedule_in_trainer_equals_torch_scheduler(rng):
    """StepLR through the Trainer (epoch interval) equals torch SGD + StepLR; lr is fed."""
    X, Y = regression_data(rng, n=8)
    g, _, loss = mlp(seed=2, sizes=(2, 4, 1), act=gn.tanh)
    init = {k: v.copy() for k, v in g.values.items()}
    opt = optim.SGD(lr=0.2, momentum=0.5, schedule=schedules.StepLR(2, gamma=0.5))
    tr = Trainer(loss, optimizer=opt)
    key = tr.step_program.key
    hist = tr.fit({"x": X, "y": Y}, epochs=6, batch_size=4, shuffle=False, verbose=False)
    tp = [torch.tensor(init[n], requires_grad=True) for n in ("W0", "b0", "W1", "b1")]
    topt = torch.optim.SGD(tp, lr=0.2, momentum=0.5)
    sched = torch.optim.lr_scheduler.StepLR(topt, 2, gamma=0.5)
    lrs = []
    for _ in range(6):
        lrs.append(topt.param_groups[0]["lr"])
        for lo in (0, 4):
            out = torch.tanh(torch.tensor(X[lo:lo + 4]) @ tp[0] + tp[1]) @ tp[2] + tp[3]
            los = ((out - torch.tensor(Y[lo:lo + 4])) ** 2).mean()
            topt.zero_grad()
            los.backward()
            topt.step()
        sched.step()
    assert hist.lr == pytest.approx(lrs, rel=1e-14)
    for n, t in zip(("W0", "b0", "W1", "b1"), tp):
        np.testing.assert_allclose(g.values[n], t.detach().numpy(), rtol=1e-10, atol=1e-13)
    assert tr.step_program.key == key and len(tr._programs) <= 2


def test_step_schedule_sets_lr_every_step(rng):
    X, Y = regression_data(rng, n=12)
    _, _, loss = mlp(seed=2)
    sched = schedules.CyclicLR(0.01, 0.1, step_size_up=2)
    tr = Trainer(loss, optimizer=optim.SGD(lr=0.05, schedule=sched))
    hist = tr.fit({"x": X, "y": Y}, epochs=3, batch_size=4, verbose=False)
    # lr recorded at the start of each epoch: steps 0, 3, 6 of the cycle
    assert hist.lr == pytest.approx([sched(0), sched(3), sched(6)])
    assert tr.optimizer.get_lr() == pytest.approx(sched(8))


def test_history_metrics_and_best_epoch(rng):
    X, Y = regression_data(rng)
    g, out, loss = mlp(seed=0)
    mae = gn.mean(gn.abs(out - g["y"]))
    calls = []

    def n_samples(trainer, data):
        calls.append(len(data["x"]))
        return float(len(data["x"]))

    tr = Trainer(loss, optimizer=optim.Adam(lr=0.01))
    hist = tr.fit({"x": X, "y": Y}, epochs=4, batch_size=8, validation={"x": X[:10], "y": Y[:10]},
                  metrics={"mae": mae, "n": n_samples}, verbose=False)
    assert isinstance(hist, History) and hist.epochs == [1, 2, 3, 4]
    assert len(hist.loss) == len(hist.val_loss) == len(hist.metrics["mae"]) == 4
    assert hist.metrics["n"] == [24.0] * 4 and hist.val_metrics["n"] == [10.0] * 4
    assert hist.best_epoch == 1 + int(np.argmin(hist.val_loss)) and hist.stopped_epoch is None
    assert hist.series("val_mae") == hist.val_metrics["mae"]
    # validation loss at the end equals evaluate() on the same data and parameters
    assert tr.evaluate({"x": X[:10], "y": Y[:10]})["loss"] == pytest.approx(hist.val_loss[-1],
                                                                           rel=1e-12)
    with pytest.raises(KeyError, match="no series"):
        hist.series("nope")
    assert History.from_dict(json.loads(json.dumps(hist.to_dict()))) == hist
    with pytest.raises(ValueError, match="metric"):
        tr.fit({"x": X, "y": Y}, epochs=5, metrics={"val_x": mae}, verbose=False)
    with pytest.raises(ValueError, match="metric"):
        tr.fit({"x": X, "y": Y}, epochs=5, metrics={"m": 3}, verbose=False)
    with pytest.raises(gn.ShapeError, match="scalar"):
        tr.fit({"x": X, "y": Y}, epochs=5, metrics={"m": out}, verbose=False)


def test_accuracy_node_matches_numpy(rng):
    g = gn.Graph("acc")
    z = g.input("z", (None, 4))
    lab = g.input("lab", (None,), dtype="int64")
    onehot = g.input("oh", (None, 4))
    Z = rng.normal(size=(50, 4))
    L = rng.integers(0, 4, 50)
    prog = gn.compile([accuracy(z, lab), accuracy(z, onehot)])
    a, b = prog(z=Z, lab=L, oh=np.eye(4)[L])
    assert a == b == pytest.approx(np.mean(Z.argmax(1) == L))
    with pytest.raises(gn.ShapeError):
        accuracy(z, g.input("bad", (None, 3)))
    with pytest.raises(gn.ShapeError):
        binary_accuracy(z, onehot[:, :1])


def test_fit_continues_across_calls_bit_for_bit(rng):
    X, Y = regression_data(rng)
    runs = []
    for split in (False, True):
        _, _, loss = mlp(seed=4)
        tr = Trainer(loss, optimizer=optim.RMSProp(lr=0.01, momentum=0.5))
        if split:
            tr.fit({"x": X, "y": Y}, epochs=2, batch_size=5, seed=3, verbose=False)
        tr.fit({"x": X, "y": Y}, epochs=5, batch_size=5, seed=3, verbose=False)
        runs.append((snapshot(tr), tr.history))
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])
    assert runs[0][1] == runs[1][1]
    with pytest.warns(UserWarning, match="nothing to do"):
        tr.fit({"x": X, "y": Y}, epochs=5, seed=3, verbose=False)
    with pytest.warns(UserWarning, match="ignored"):
        tr.fit({"x": X, "y": Y}, epochs=6, seed=99, verbose=False)


def test_progress_bar_is_quiet_when_not_a_terminal(rng, capsys):
    X, Y = regression_data(rng)
    _, _, loss = mlp()
    Trainer(loss).fit({"x": X, "y": Y}, epochs=2, verbose=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


# -- early stopping ---------------------------------------------------------------------------------

def _es_setup(rng, restore_best=True, patience=3):
    """Validation labels are the negated targets: val loss falls, then rises as training fits."""
    X, Y = regression_data(rng, n=32)
    g, out, loss = mlp(seed=5, sizes=(2, 8, 1))
    tr = Trainer(loss, optimizer=optim.Adam(lr=0.05))
    es = EarlyStopping(patience=patience, restore_best=restore_best)
    val = {"x": X, "y": 0.3 - 0.2 * Y}
    hist = tr.fit({"x": X, "y": Y}, epochs=200, batch_size=8, seed=0, validation=val,
                  early_stopping=es, verbose=False)
    return tr, hist, es, val


def test_early_stopping_stops_after_patience_and_restores_best(rng):
    tr, hist, es, val = _es_setup(rng)
    assert hist.stopped_epoch is not None and hist.stopped_epoch < 200
    assert hist.stopped_epoch == hist.best_epoch + 3 == es.best_epoch + 3 == len(hist)
    best = hist.val_loss[hist.best_epoch - 1]
    assert best == min(hist.val_loss)
    assert all(v >= best for v in hist.val_loss[hist.best_epoch:])
    # parameters are those of the best epoch again
    assert tr.evaluate(val)["loss"] == pytest.approx(best, rel=1e-12)


def test_early_stopping_without_restore_keeps_last_parameters(rng):
    tr, hist, _, val = _es_setup(rng, restore_best=False)
    assert hist.stopped_epoch == hist.best_epoch + 3
    assert tr.evaluate(val)["loss"] == pytest.approx(hist.val_loss[-1], rel=1e-12)
    assert tr.evaluate(val)["loss"] > min(hist.val_loss)


def test_early_stopping_min_delta_and_monitor(rng):
    X, Y = regression_data(rng)
    _, _, loss = mlp(seed=0)
    tr = Trainer(loss, optimizer=optim.SGD(lr=0.01))
    # huge min_delta: no epoch after the first counts as an improvement
    hist = tr.fit({"x": X, "y": Y}, epochs=50, batch_size=8, verbose=False,
                  early_stopping=EarlyStopping(patience=2, min_delta=10.0))
    assert hist.stopped_epoch == 3 and hist.best_epoch == 1
    # without validation data, "val_loss" falls back to the training loss (full-batch
    # gradient descent with a small step: it decreases every epoch, so no stop)
    _, _, loss = mlp(seed=0)
    hist = Trainer(loss, optimizer=optim.SGD(lr=0.05)).fit(
        {"x": X, "y": Y}, epochs=8, batch_size=len(X), verbose=False,
        early_stopping=EarlyStopping(patience=2))
    assert hist.stopped_epoch is None and len(hist) == 8 and hist.best_epoch == 8
    assert all(a > b for a, b in zip(hist.loss, hist.loss[1:]))
    with pytest.raises(ValueError, match="monitors"):
        Trainer(mlp()[2]).fit({"x": X, "y": Y}, early_stopping=EarlyStopping(monitor="acc"),
                              verbose=False)
    for bad in (lambda: EarlyStopping(patience=0), lambda: EarlyStopping(min_delta=-1),
                lambda: EarlyStopping(mode="up")):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        Trainer(mlp()[2]).fit({"x": X, "y": Y}, early_stopping=3, verbose=False)


# -- checkpoints --------------------------------------------------------------------------------------

def _ckpt_trainer(schedule=None):
    _, _, loss = mlp(seed=6, sizes=(2, 6, 1))
    return Trainer(loss, optimizer=optim.Adam(lr=0.02, schedule=schedule),
                   regularization=gn.nn.ElasticNet(1e-3, r=0.5))


@pytest.mark.parametrize("schedule", [schedules.CosineAnnealingLR(5),
                                      schedules.CyclicLR(0.001, 0.05, step_size_up=3)],
                         ids=["cosine_per_epoch", "cyclic_per_step"])
def test_checkpoint_resume_is_bit_for_bit(rng, tmp_path, schedule):
    X, Y = regression_data(rng, n=30)
    Xv, Yv = regression_data(rng, n=10)
    kw = dict(batch_size=7, shuffle=True, seed=123, validation={"x": Xv, "y": Yv}, verbose=False)
    straight = _ckpt_trainer(schedule)
    straight.fit({"x": X, "y": Y}, epochs=7, early_stopping=EarlyStopping(patience=50), **kw)

    first = _ckpt_trainer(schedule)
    first.fit({"x": X, "y": Y}, epochs=3, early_stopping=EarlyStopping(patience=50), **kw)
    path = tmp_path / "run.ckpt"
    first.save_checkpoint(path)
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]  # no temporary left behind
    resumed = _ckpt_trainer(schedule)  # a fresh graph, as in a new process
    resumed.load_checkpoint(path)
    assert resumed.epoch == 3 and len(resumed.history) == 3
    resumed.fit({"x": X, "y": Y}, epochs=7, early_stopping=EarlyStopping(patience=50), **kw)

    a, b = snapshot(straight), snapshot(resumed)
    assert a.keys() == b.keys() and "optim/step" in a and "optim/W0/exp_avg" in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert straight.history == resumed.history
    assert straight.global_step == resumed.global_step
    assert straight.early_stopping.state_dict() == resumed.early_stopping.state_dict()


def test_checkpoint_file_is_json_and_npy_without_pickle(rng, tmp_path):
    X, Y = regression_data(rng)
    tr = _ckpt_trainer()
    tr.fit({"x": X, "y": Y}, epochs=2, verbose=False, early_stopping=EarlyStopping(patience=5))
    path = tmp_path / "c.npz"
    tr.save_checkpoint(path)
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("meta.json"))
    assert meta["format"] == "graphnn-checkpoint" and meta["epoch"] == 2
    assert meta["rng"]["bit_generator"] == "PCG64" and meta["optimizer"]["type"] == "Adam"
    kinds = {(e["kind"], e["name"]) for e in meta["arrays"]}
    assert ("param", "W0") in kinds and ("state", "W0/exp_avg") in kinds
    assert ("state", "lr") in kinds and ("best", "W0") in kinds
    with np.load(path, allow_pickle=False) as f:  # readable as a plain npz
        key = next(e["key"] for e in meta["arrays"] if e["name"] == "W0" and e["kind"] == "param")
        np.testing.assert_array_equal(f[key], tr.graph.values["W0"])
    # saving again replaces the file atomically
    tr.save_checkpoint(path)
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def _rewrite(src, dst, edit_meta=None, drop=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "meta.json" and edit_meta is not None:
                meta = json.loads(data)
                edit_meta(meta)
                data = json.dumps(meta).encode()
            if item != drop:
                zout.writestr(item, data)


def test_bad_checkpoints_raise_format_error_and_change_nothing(rng, tmp_path):
    X, Y = regression_data(rng)
    tr = _ckpt_trainer()
    tr.fit({"x": X, "y": Y}, epochs=1, verbose=False)
    good = tmp_path / "good.ckpt"
    tr.save_checkpoint(good)
    target = _ckpt_trainer()
    before = snapshot(target)

    def expect(path, match):
        with pytest.raises(gn.FormatError, match=match):
            target.load_checkpoint(path)
        for k, v in snapshot(target).items():
            np.testing.assert_array_equal(v, before[k])
        assert target.epoch == 0

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a zip")
    expect(junk, "not a graphnn checkpoint")
    expect(tmp_path / "missing.ckpt", "not a graphnn checkpoint")
    cases = {
        "format": (lambda m: m.update(format="other"), "not a graphnn"),
        "version": (lambda m: m.update(version=99), "version"),
        "optimizer": (lambda m: m["optimizer"].update(type="SGD"), "optimizer"),
        "epoch": (lambda m: m.update(epoch=-1), "epoch"),
        "rng": (lambda m: m.update(rng={"bit_generator": "MT19937"}), "rng"),
        "array_name": (lambda m: m["arrays"][0].update(name="nope"), "does not have"),
        "array_key": (lambda m: m["arrays"][0].update(key="../x"), "no data"),
        "arrays": (lambda m: m.update(arrays="x"), "list"),
        "missing": (lambda m: m["arrays"].pop(0), "lacks"),
        "history": (lambda m: m.update(history={"loss": 1}), "history"),
    }
    for name, (edit, match) in cases.items():
        bad = tmp_path / f"{name}.ckpt"
        _rewrite(good, bad, edit_meta=edit)
        expect(bad, match)
    no_meta = tmp_path / "nometa.ckpt"
    _rewrite(good, no_meta, drop="meta.json")
    expect(no_meta, "meta.json")
    # an array with the wrong shape
    other = Trainer(mlp(seed=6, sizes=(2, 5, 1))[2], optimizer=optim.Adam(lr=0.02),
                    regularization=gn.nn.ElasticNet(1e-3, r=0.5))
    wrong = tmp_path / "wrong.ckpt"
    other.save_checkpoint(wrong)
    expect(wrong, "checkpoint")
    # a different optimizer setting loads, with a warning
    warm = Trainer(mlp(seed=6, sizes=(2, 6, 1))[2], optimizer=optim.Adam(lr=0.5),
                   regularization=gn.nn.ElasticNet(1e-3, r=0.5))
    with pytest.warns(UserWarning, match="settings differ"):
        warm.load_checkpoint(good)


# -- bad data -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, error, match", [
    (lambda d: d.update(x=d["x"][:, :1]), gn.ShapeError, "feature"),
    (lambda d: d.update(x=d["x"][:, :, None]), gn.ShapeError, "shape"),
    (lambda d: d["x"].__setitem__((3, 1), np.nan), DataError, "NaN or inf.*sample 3"),
    (lambda d: d["y"].__setitem__((5, 0), np.inf), DataError, "NaN or inf"),
    (lambda d: d.update(y=d["y"][:-2]), gn.ShapeError, "mismatched lengths"),
    (lambda d: d.clear(), DataError, "empty"),
    (lambda d: d.update(x=d["x"][:0], y=d["y"][:0]), DataError, "0 samples"),
    (lambda d: d.update(z=d["x"]), DataError, "unknown feed.*'z'"),
    (lambda d: d.pop("y"), DataError, "missing input.*'y'"),
    (lambda d: d.update(x=np.array([["a", "b"]] * 24)), DataError, "dtype"),
])
def test_bad_training_data_raises_before_training(rng, mutate, error, match):
    X, Y = regression_data(rng)
    data = {"x": X.copy(), "y": Y.copy()}
    mutate(data)
    _, _, loss = mlp()
    tr = Trainer(loss, optimizer=optim.SGD(lr=0.1))
    before = snapshot(tr)
    with pytest.raises(error, match=match):
        tr.fit(data, epochs=2, verbose=False)
    assert tr.global_step == 0 and tr.epoch == 0
    for k, v in snapshot(tr).items():
        np.testing.assert_array_equal(v, before[k])


def test_bad_validation_data_and_arguments_raise_before_training(rng):
    X, Y = regression_data(rng)
    _, _, loss = mlp()
    tr = Trainer(loss, optimizer=optim.SGD(lr=0.1))
    before = snapshot(tr)
    with pytest.raises(DataError, match="validation data.*NaN"):
        tr.fit({"x": X, "y": Y}, validation={"x": X * np.nan, "y": Y}, verbose=False)
    with pytest.raises(DataError, match="validation data.*missing"):
        tr.fit({"x": X, "y": Y}, validation={"x": X}, verbose=False)
    with pytest.raises(DataError, match="dict"):
        tr.fit([X, Y], verbose=False)
    with pytest.raises(DataError, match="no full batch"):
        tr.fit({"x": X, "y": Y}, batch_size=100, drop_last=True, verbose=False)
    for kw in (dict(epochs=0), dict(batch_size=0), dict(batch_size=2.5), dict(seed="x")):
        with pytest.raises(ValueError):
            tr.fit({"x": X, "y": Y}, verbose=False, **kw)
    for k, v in snapshot(tr).items():
        np.testing.assert_array_equal(v, before[k])
    # an input declared without a batch dimension cannot be mini-batched
    g = gn.Graph("fixed")
    x = g.input("x", (24, 2))
    w = g.param("w", (2, 1))
    with pytest.raises(gn.ShapeError, match="batch dimension"):
        Trainer(gn.mean(x @ w)).fit({"x": X}, verbose=False)


# -- divergence ------------------------------------------------------------------------------------------

def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_parameters(rng):
    X, Y = regression_data(rng, n=16)
    g, _, loss = mlp(seed=1, sizes=(2, 8, 1), act=gn.relu)
    init = {k: v.copy() for k, v in g.values.items()}
    tr = Trainer(loss, optimizer=optim.SGD(lr=50.0))
    with pytest.raises(DivergedError, match=r"epoch \d+, step \d+") as info:
        tr.fit({"x": X, "y": Y}, epochs=100, batch_size=4, shuffle=False, verbose=False)
    err = info.value
    # replay the same steps by hand: parameters before every step, and each step's loss
    g2, _, loss2 = mlp(seed=1, sizes=(2, 8, 1), act=gn.relu)
    ps = list(g2.params)
    prog = gn.compile([loss2], updates=optim.SGD(lr=50.0).build(ps, gn.grad(loss2, ps)))
    states, losses = [], []
    with np.errstate(all="ignore"):
        for k in range(err.global_step):
            lo = (k % 4) * 4
            states.append({p.name: g2.values[p.name].copy() for p in ps})
            losses.append(float(prog(x=X[lo:lo + 4], y=Y[lo:lo + 4])[0]))
    assert not np.isfinite(losses[-1]) and all(np.isfinite(losses[:-1]))
    assert (err.epoch, err.step) == ((err.global_step - 1) // 4 + 1, (err.global_step - 1) % 4 + 1)
    assert f"epoch {err.epoch}, step {err.step}" in str(err)
    good = states[-2]  # the last parameters whose loss was finite
    for name, arr in good.items():
        np.testing.assert_array_equal(g.values[name], arr)
        assert np.isfinite(g.values[name]).all()
    assert any(not np.array_equal(good[n], init[n]) for n in good)


def test_update_that_overflows_parameters_is_undone(rng):
    """The loss is finite but the step's update overflows: that update is undone."""
    g = gn.Graph("overflow")
    x = g.input("x", (None, 1))
    w = g.param("w", value=np.array([[3.0]]))
    loss = gn.mean(gn.square(x @ w))
    tr = Trainer(loss, optimizer=optim.SGD(lr=1e308))
    with np.errstate(all="ignore"), pytest.raises(DivergedError, match="epoch 1, step 1.*non-finite"):
        tr.fit({"x": np.ones((2, 1))}, epochs=3, batch_size=2, verbose=False)
    assert g.values["w"][0, 0] == 3.0 and tr.epoch == 0


# -- construction, predict, API -------------------------------------------------------------------------

def test_trainer_api_from_design(rng):
    X, Y = regression_data(rng)
    g, out, loss = mlp()
    tr = gn.Trainer(loss, optimizer=gn.optim.Adam(lr=1e-2), backend="numpy",
                    regularization=gn.nn.L2(1e-4))
    assert [p.name for p in tr.params] == ["W0", "b0", "W1", "b1"]
    assert all(optim.is_state(n) for n in tr.state) and tr.state
    assert tr.step_outputs[0] is tr.objective and tr.objective is not loss
    assert {n.role for n in tr.step_outputs[1:]} == {"update"}
    hist = tr.fit({"x": X, "y": Y}, epochs=3, batch_size=8, seed=0, verbose=False,
                  validation={"x": X, "y": Y}, early_stopping=gn.EarlyStopping(patience=20))
    assert len(hist) == 3
    pred = tr.predict(out, {"x": X})
    v = g.values
    ref = np.tanh(X @ v["W0"] + v["b0"]) @ v["W1"] + v["b1"]
    np.testing.assert_allclose(pred, ref, rtol=1e-12)
    np.testing.assert_allclose(tr.predict(out, {"x": X}, batch_size=5), pred, rtol=1e-13)
    # the penalty is in the reported loss
    plain = float(gn.compile(loss, fast=False)(x=X, y=Y))
    pen = 1e-4 / 2 * sum((v[p] ** 2).sum() for p in ("W0", "b0", "W1", "b1"))
    assert tr.evaluate({"x": X, "y": Y})["loss"] == pytest.approx(plain + pen, rel=1e-12)
    with pytest.raises(gn.GraphError, match="not a node"):
        tr.predict(gn.Graph("other").input("x", (None, 2)), {"x": X})
    with pytest.raises(DataError, match="unknown"):
        tr.predict(out, {"x": X, "q": X})
    with pytest.raises(DataError, match="NaN"):
        tr.predict(out, {"x": X * np.inf})


def test_trainer_construction_errors():
    g, out, loss = mlp()
    with pytest.raises(gn.ShapeError, match="scalar"):
        Trainer(out)
    with pytest.raises(gn.GraphError, match="backend"):
        Trainer(loss, backend="cuda")
    with pytest.raises(gn.GraphError, match="optimizer"):
        Trainer(loss, optimizer="adam")
    with pytest.raises(gn.GraphError, match="graph node"):
        Trainer(3.0)
    with pytest.raises(gn.GraphError, match="no trainable"):
        g2 = gn.Graph("noparams")
        Trainer(gn.mean(g2.input("x", (None, 2))))
    with pytest.raises(gn.GraphError, match="not a param"):
        Trainer(loss, params=[out])
    # explicit params: only those train
    _, _, loss3 = mlp()
    tr = Trainer(loss3, params=[loss3.graph["W1"]])
    assert [p.name for p in tr.params] == ["W1"]


def test_lazy_exports():
    assert gn.Trainer is Trainer and gn.EarlyStopping is EarlyStopping
    assert gn.optim is optim and gn.nn.L2 is gn.nn.regularization.L2
    assert gn.nn.schedules is schedules


def test_spiral_with_integer_labels_and_softmax_cross_entropy():
    """Three interleaved spirals (NumPy), integer labels (N,), multi-class accuracy node."""
    rng = np.random.default_rng(1)
    n, k = 60, 3
    r = np.linspace(0.1, 1, n)
    X = np.concatenate([np.stack([r * np.sin(4 * r + 2.1 * c), r * np.cos(4 * r + 2.1 * c)], 1)
                        for c in range(k)]) + rng.normal(0, 0.02, (n * k, 2))
    L = np.repeat(np.arange(k), n)
    g = gn.Graph("spiral", seed=0)
    x, lab = g.input("x", (None, 2)), g.input("label", (None,), dtype="int64")
    h = gn.tanh(x @ g.param("W0", (2, 32), init="xavier_normal") + g.param("b0", value=np.zeros(32)))
    logits = h @ g.param("W1", (32, k), init="xavier_normal") + g.param("b1", value=np.zeros(k))
    tr = Trainer(gn.softmax_cross_entropy(logits, lab), optimizer=optim.Adam(lr=0.03))
    hist = tr.fit({"x": X, "label": L}, epochs=150, batch_size=30, seed=0, verbose=False,
                  metrics={"acc": accuracy(logits, lab)})
    assert hist.metrics["acc"][-1] > 0.95
    assert np.mean(tr.predict(logits, {"x": X}).argmax(1) == L) > 0.95
    with pytest.raises(DataError, match="int64 values, got float64"):
        tr.fit({"x": X, "label": L.astype(float)}, epochs=151, verbose=False)


def test_metrics_do_not_change_training_and_programs_can_alternate(rng):
    """A fit with metric nodes compiles a second step program; switching between the two
    (and back) trains exactly as one program does."""
    X, Y = regression_data(rng)
    results = []
    for with_metrics in (False, True):
        g, out, loss = mlp(seed=4)
        tr = Trainer(loss, optimizer=optim.Adam(lr=0.01))
        mae = gn.mean(gn.abs(out - g["y"]))
        if with_metrics:
            tr.fit({"x": X, "y": Y}, epochs=2, batch_size=5, metrics={"mae": mae}, verbose=False)
        tr.fit({"x": X, "y": Y}, epochs=4, batch_size=5, verbose=False)
        results.append(snapshot(tr))
    for k in results[0]:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)
