"""l3seg: CT body composition at the third lumbar vertebra (L3).

Segments an axial CT slice into 0 background, 1 skeletal muscle, 2 subcutaneous fat (SAT) and
3 visceral fat (VAT) with a U-Net, and turns the segmentation into areas (cm2), skeletal
muscle index (cm2/m2), muscle density (HU) and published cut-off verdicts.
"""

__version__ = "0.1.0"
