"""Which slices to measure: explicit indices, or L3 from a vertebra label map."""
