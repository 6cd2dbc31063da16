"""The 3D Slicer side: MRML logic, the module panel, runtime installs, job messages (imports slicer, qt, vtk)."""
