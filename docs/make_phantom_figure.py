"""Draw docs/phantom_examples.png: six synthetic L3 slices (thin to obese, both sexes) and their labels.

    .venv/bin/python docs/make_phantom_figure.py
"""

from pathlib import Path

from l3seg_lib.imageio.labels import remap_labels
from l3seg_lib.phantom import PHANTOM_LABEL_MAP, make_patient, render_slice
from l3seg_lib.reporting.figures import examples_grid

specs = sorted((make_patient(i, seed=0) for i in range(24)), key=lambda s: s.bmi)
chosen = [specs[i] for i in (0, 5, 10, 14, 19, 23)]
items = []
for spec in chosen:
    hu, lab, info = render_slice(spec, 0)
    title = f"{spec.sex}, {spec.age} y, BMI {spec.bmi:.0f}, {info['spacing_mm']:.2f} mm"
    items.append((hu, remap_labels(lab, PHANTOM_LABEL_MAP, "phantom"), title))
fig = examples_grid(items, ncols=6)
out = Path(__file__).parent / "phantom_examples.png"
fig.savefig(out, dpi=70, bbox_inches="tight")
print(f"wrote {out}")
