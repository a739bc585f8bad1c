"""CT operators for the generic operator suite (small: 32 x 32 slices, 20 views)."""

import torch

from medrecon.physics.ct import fan_geometry, make_ct_operator, parallel_geometry, sparse_view_angles

_PARALLEL = parallel_geometry((32, 32), sparse_view_angles(20, "parallel"))
_FAN = fan_geometry((32, 32), sparse_view_angles(20, "fan"), source_origin=60.0,
                    origin_detector=40.0)

CASES = {
    "ct-astra-parallel": lambda: make_ct_operator(_PARALLEL, "astra"),
    "ct-astra-fan": lambda: make_ct_operator(_FAN, "astra"),
    "ct-torch-parallel": lambda: make_ct_operator(_PARALLEL, "torch"),
    "ct-torch-fan": lambda: make_ct_operator(_FAN, "torch"),
    "ct-torch-fan-f64": lambda: make_ct_operator(_FAN, "torch", dtype=torch.float64),
}
