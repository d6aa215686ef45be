"""Anatomical labels the phantom writes into its masks (ITK-SNAP style) and their four classes."""

from __future__ import annotations

from l3seg_lib.imageio.labels import LabelDescription

# anatomical source labels written to the masks (ITK-SNAP style)
AIR, PSOAS, PARASPINAL, QL, WALL, SAT, VAT, BONE, KIDNEY, LIVER, BOWEL, VESSEL, OTHER = range(13)
LABELS = [
    LabelDescription(AIR, "Clear Label", (0, 0, 0)),
    LabelDescription(PSOAS, "psoas", (220, 60, 60)),
    LabelDescription(PARASPINAL, "paraspinal (erector spinae, multifidus)", (200, 40, 40)),
    LabelDescription(QL, "quadratus lumborum", (240, 100, 80)),
    LabelDescription(WALL, "abdominal wall and other muscle", (255, 120, 120)),
    LabelDescription(SAT, "subcutaneous fat", (250, 220, 90)),
    LabelDescription(VAT, "visceral fat", (90, 200, 240)),
    LabelDescription(BONE, "vertebra", (240, 240, 240)),
    LabelDescription(KIDNEY, "kidney", (150, 90, 200)),
    LabelDescription(LIVER, "liver", (150, 80, 40)),
    LabelDescription(BOWEL, "bowel", (120, 180, 90)),
    LabelDescription(VESSEL, "vessel", (200, 0, 120)),
    LabelDescription(OTHER, "other soft tissue (skin, linea alba, spinal canal)", (128, 128, 128)),
]
PHANTOM_LABEL_MAP = {
    "background": [AIR, BONE, KIDNEY, LIVER, BOWEL, VESSEL, OTHER],
    "muscle": [PSOAS, PARASPINAL, QL, WALL],
    "sat": [SAT],
    "vat": [VAT],
}


