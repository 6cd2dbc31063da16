"""The browser front end (`fetalbrainseg serve`) on trame-slicer, over the Slicer logic."""
