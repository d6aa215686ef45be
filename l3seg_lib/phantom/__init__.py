"""Synthetic axial CT slices at L3 with ground-truth labels: the built-in default data set.

Each patient gets a body habitus (sex, age, height, BMI), from which the geometry follows:
skin and a subcutaneous fat ring of varying thickness (Scarpa's fascia inside it), the
abdominal wall muscles (rectus with linea alba, obliques), psoas, quadratus lumborum and
paraspinal muscles, the L3 vertebra (cortex, cancellous bone, canal, posterior elements),
kidneys, a liver tip, colon and small bowel loops with mesenteric (visceral) fat between
them, aorta, IVC and mesenteric vessels, and the CT table. HU are drawn from physiological
ranges (muscle 20-55 HU mean, fat about -90 to -110 HU, bone > 200 HU; optional IV and oral
contrast), then blurred (partial volume) and overlaid with correlated CT-like noise whose
level grows with body size. Pixel spacing is 0.6-1.0 mm per patient.

Output (all readable by the normal loaders): one DICOM series per patient
(``dicom/<patient>/``, 1-3 L3 slices 3 mm apart), one NIfTI label volume per patient with
ITK-SNAP-style anatomical labels (``masks/<patient>.nii.gz``, described in ``labels.txt``),
``manifest.csv`` and ``clinical.csv``. :data:`PHANTOM_LABEL_MAP` maps the anatomical labels
to the four classes. Everything is deterministic for a given seed.

``patients`` habitus, ``labels`` anatomical labels, ``canvas`` drawing, ``anatomy`` one function
per structure, ``render`` composes them, ``writer`` writes the files.
"""

from l3seg_lib.phantom.labels import LABELS, PHANTOM_LABEL_MAP
from l3seg_lib.phantom.patients import SLICE_GAP_MM, PatientSpec, make_patient
from l3seg_lib.phantom.render import render_slice
from l3seg_lib.phantom.writer import generate, write_ct_slice

__all__ = ["LABELS", "PHANTOM_LABEL_MAP", "SLICE_GAP_MM", "PatientSpec", "generate", "make_patient", "render_slice",
           "write_ct_slice"]
