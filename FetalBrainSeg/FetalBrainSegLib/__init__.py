"""FetalBrainSeg engine: RFBSNet fetal brain segmentation for stacks of 2D MRI slices.

Imports no Slicer, Qt or CTK: the Slicer module, the command line and the Python API all
call this package.
"""
