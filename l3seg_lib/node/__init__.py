"""``l3seg serve``: a DICOM node. CT series arrive by C-STORE (:mod:`.scp`), are kept on disk
before they are acknowledged and declared complete when no instance has arrived for a while
(:mod:`.intake`), are measured the way ``l3seg measure`` measures a folder, and their DICOM SEG
and SR go back to the PACS by C-STORE with retries (:mod:`.sender`); :mod:`.service` ties them
together and keeps the node up.
"""
