"""The grid the networks see: slices resampled to a fixed pixel size, on a grid of at least 256 pixels
whose sides are multiples of 32. Plain constants, so the engine reads them without PyTorch."""

NETWORK_SIZE = 256  # the smallest network grid, what the networks are trained on
DEFAULT_PIXEL_SIZE_MM = 1.2  # 256 px x 1.2 mm = 307 mm, the usual fetal field of view
GRID_MULTIPLE = 32  # RFBSNet halves its grid four times; DFANet and ShuffleSeg five
