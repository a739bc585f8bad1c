"""CT operators for the generic operator suite (small: 32 x 32 slices).

Every ASTRA CPU projector kind (parallel: linear, line, strip; fan: line_fanflat, strip_fanflat),
the torch backend in float32 and float64, pixel sizes and detector spacings other than 1 mm, and
the limited-angle geometry. (medrecon's fan geometry has no detector offset, so there is none.)
"""

import torch

from medrecon.physics.ct import (fan_geometry, limited_angle_angles, make_ct_operator,
                                 parallel_geometry, sparse_view_angles)

_PARALLEL = parallel_geometry((32, 32), sparse_view_angles(20, "parallel"))
_FAN = fan_geometry((32, 32), sparse_view_angles(20, "fan"), source_origin=60.0,
                    origin_detector=40.0)
# 0.7 mm pixels on 0.9 mm detector bins (rectangular image), and 1.6 mm pixels on a fan detector
_PARALLEL_PIXEL = parallel_geometry((28, 34), sparse_view_angles(16, "parallel"), pixel_size=0.7,
                                    detector_spacing=0.9)
_FAN_PIXEL = fan_geometry((32, 32), sparse_view_angles(18, "fan"), source_origin=120.0,
                          origin_detector=60.0, pixel_size=1.6)
_LIMITED = parallel_geometry((32, 32), limited_angle_angles(90.0))      # 0..89 degrees, 1 degree

CASES = {
    "ct-astra-parallel": lambda: make_ct_operator(_PARALLEL, "astra"),
    "ct-astra-parallel-line": lambda: make_ct_operator(_PARALLEL, "astra", projector="line"),
    "ct-astra-parallel-strip": lambda: make_ct_operator(_PARALLEL, "astra", projector="strip"),
    "ct-astra-fan": lambda: make_ct_operator(_FAN, "astra"),
    "ct-astra-fan-strip": lambda: make_ct_operator(_FAN, "astra", projector="strip_fanflat"),
    "ct-astra-parallel-pixel0.7": lambda: make_ct_operator(_PARALLEL_PIXEL, "astra"),
    "ct-astra-fan-pixel1.6": lambda: make_ct_operator(_FAN_PIXEL, "astra"),
    "ct-astra-limited-angle": lambda: make_ct_operator(_LIMITED, "astra"),
    "ct-astra-parallel-f64": lambda: make_ct_operator(_PARALLEL, "astra", dtype=torch.float64),
    "ct-torch-parallel": lambda: make_ct_operator(_PARALLEL, "torch"),
    "ct-torch-fan": lambda: make_ct_operator(_FAN, "torch"),
    "ct-torch-fan-f64": lambda: make_ct_operator(_FAN, "torch", dtype=torch.float64),
    "ct-torch-parallel-pixel0.7-f64": lambda: make_ct_operator(_PARALLEL_PIXEL, "torch",
                                                               dtype=torch.float64),
    "ct-torch-fan-pixel1.6": lambda: make_ct_operator(_FAN_PIXEL, "torch"),
    "ct-torch-limited-angle-f64": lambda: make_ct_operator(_LIMITED, "torch", dtype=torch.float64),
}
