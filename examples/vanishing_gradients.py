"""Lecture 004's vanishing gradient: 20 sigmoid layers next to 20 ReLU layers.

Run: python examples/vanishing_gradients.py [out_dir]  (writes out_dir/vanishing.png)
"""
import os
import sys

import viz

out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
os.makedirs(out_dir, exist_ok=True)
fig = viz.plots.vanishing_gradient_comparison(depth=20)
fig.savefig(os.path.join(out_dir, "vanishing.png"), dpi=80)
print("wrote", os.path.join(out_dir, "vanishing.png"))
