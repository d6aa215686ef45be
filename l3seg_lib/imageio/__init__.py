"""Image I/O: CT images (DICOM, NIfTI, PNG) in HU and one orientation, and label files.

``ct``      image classes, orientation, plausibility checks, resource limits from headers
``dicom``   DICOM files and series (pydicom)
``nifti``   NIfTI images and label volumes (nibabel)
``png``     8-bit PNG exports
``reader``  one entry point: :func:`read_image`
``labels``  label files and label maps
"""
