"""FBP: filters, units (FBP of A x ~ x), measured PSNR for parallel and fan beam."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medrecon.errors import UserError
from medrecon.metrics import psnr
from medrecon.physics.ct import (fan_geometry, limited_angle_angles, make_ct_operator,
                                 parallel_geometry, sparse_view_angles)
from medrecon.solvers.fbp import FILTERS, angular_weight, fbp, padded_length, ramp_filter

N = 64
PARALLEL = parallel_geometry((N, N), sparse_view_angles(180, "parallel"), pixel_size=0.5)
FAN = fan_geometry((N, N), sparse_view_angles(360, "fan"), source_origin=60.0,
                   origin_detector=40.0, pixel_size=0.5)
GEOMETRIES = {"parallel": PARALLEL, "fan": FAN}

# (value, semi-axis a, semi-axis b, centre x, centre y, rotation deg): the modified Shepp-Logan
# head on [-1, 1]^2 (Toft), 0..1 intensities.
_ELLIPSES = [(1.0, .69, .92, 0, 0, 0), (-.8, .6624, .874, 0, -.0184, 0),
             (-.2, .11, .31, .22, 0, -18), (-.2, .16, .41, -.22, 0, 18), (.1, .21, .25, 0, .35, 0),
             (.1, .046, .046, 0, .1, 0), (.1, .046, .046, 0, -.1, 0),
             (.1, .046, .023, -.08, -.605, 0), (.1, .023, .023, 0, -.606, 0),
             (.1, .023, .046, .06, -.605, 0)]


def ellipse_phantom(n: int, supersample: int = 4) -> torch.Tensor:
    """The 2D modified Shepp-Logan phantom, pixel-averaged, ``[n, n]`` float32."""
    m = n * supersample
    c = (np.arange(m) + 0.5) / m * 2 - 1
    y, x = np.meshgrid(-c, c, indexing="ij")
    img = np.zeros_like(x)
    for value, a, b, x0, y0, phi in _ELLIPSES:
        cp, sp = math.cos(math.radians(phi)), math.sin(math.radians(phi))
        xr, yr = (x - x0) * cp + (y - y0) * sp, -(x - x0) * sp + (y - y0) * cp
        img[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += value
    return torch.from_numpy(img.reshape(n, supersample, n, supersample).mean((1, 3))).float()


def smooth_phantom(n: int) -> torch.Tensor:
    """Two slices of smooth Gaussian blobs ``[2, n, n]`` (FBP is then limited by the filter only)."""
    c = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / (n / 2)
    y, x = torch.meshgrid(-c, c, indexing="ij")
    a = torch.exp(-((x - 0.2) ** 2 / 0.1 + (y + 0.1) ** 2 / 0.05))
    b = 0.5 * torch.exp(-((x + 0.3) ** 2 + (y - 0.3) ** 2) / 0.03)
    return torch.stack([a + b, a.T]).float()


# measured PSNR (dB) on the smooth phantom with ASTRA data, minus a 1 dB margin
SMOOTH_FLOOR = {("parallel", "ram-lak"): 57.2, ("parallel", "hann"): 49.0,
                ("fan", "ram-lak"): 59.3, ("fan", "hann"): 49.8}
# measured PSNR (dB) on the Shepp-Logan ellipses with ASTRA data, minus 0.5 dB
ELLIPSE_FLOOR = {("parallel", "ram-lak"): 24.7, ("parallel", "shepp-logan"): 23.7,
                 ("fan", "ram-lak"): 26.9, ("fan", "shepp-logan"): 25.4}


@pytest.mark.parametrize("beam, filter", sorted(SMOOTH_FLOOR))
def test_fbp_inverts_dense_scan_of_smooth_phantom(beam: str, filter: str) -> None:
    g = GEOMETRIES[beam]
    x = smooth_phantom(N)
    rec = fbp(make_ct_operator(g, "astra")(x), g, filter)
    assert rec.shape == x.shape and rec.dtype == torch.float32
    value = psnr(rec, x, 1.0)
    assert value > SMOOTH_FLOOR[(beam, filter)], f"{beam}/{filter}: {value:.2f} dB"
    # a 5 % scale error would cost ~16 dB here: the units are right
    assert float(rec.sum() / x.sum()) == pytest.approx(1.0, abs=0.005)


@pytest.mark.parametrize("beam, filter", sorted(ELLIPSE_FLOOR))
def test_fbp_shepp_logan_psnr(beam: str, filter: str) -> None:
    g = GEOMETRIES[beam]
    x = ellipse_phantom(N)[None]
    value = psnr(fbp(make_ct_operator(g, "astra")(x), g, filter), x, 1.0)
    assert value > ELLIPSE_FLOOR[(beam, filter)], f"{beam}/{filter}: {value:.2f} dB"


@pytest.mark.parametrize("beam", ["parallel", "fan"])
def test_fbp_of_torch_projections(beam: str) -> None:
    g = GEOMETRIES[beam]
    x = smooth_phantom(N)
    assert psnr(fbp(make_ct_operator(g, "torch")(x), g), x, 1.0) > 57.0


def test_fbp_window_ordering_and_cutoff() -> None:
    g = PARALLEL
    x = ellipse_phantom(N)[None]
    y = make_ct_operator(g, "astra")(x)
    values = [psnr(fbp(y, g, f), x, 1.0) for f in FILTERS]
    # on this sharp phantom, smoother windows lose resolution: ram-lak > shepp-logan > cosine > hamming > hann
    assert values == sorted(values, reverse=True)
    assert psnr(fbp(y, g, "ram-lak", frequency_scaling=0.5), x, 1.0) < values[0] - 2


def test_operator_backprojection_option() -> None:
    g = PARALLEL
    op = make_ct_operator(g, "torch")
    x = smooth_phantom(N)
    y = op(x)
    assert psnr(fbp(y, g, operator=op), x, 1.0) > 51.9          # measured 52.9 dB
    with pytest.raises(UserError, match="geometry"):
        fbp(y, g, operator=make_ct_operator(parallel_geometry((N, N), sparse_view_angles(180)), "torch"))


def test_ramp_filter_response() -> None:
    d, spacing = 50, 0.5
    length = padded_length(d)
    assert length == 128 and padded_length(10) == 64
    h = ramp_filter(d, spacing)
    freq = torch.arange(h.numel(), dtype=torch.float64) / (length * spacing)   # cycles / mm
    # band-limited ramp: close to |f| away from DC, small positive at DC
    torch.testing.assert_close(h[8:], freq[8:], rtol=0.02, atol=0)
    assert 0 < float(h[0]) < float(freq[1])
    nyquist = {name: float(ramp_filter(d, spacing, name)[-1] / h[-1]) for name in FILTERS}
    assert nyquist["ram-lak"] == pytest.approx(1.0)
    assert nyquist["shepp-logan"] == pytest.approx(2 / math.pi)
    assert nyquist["cosine"] == pytest.approx(0.0, abs=1e-12)
    assert nyquist["hamming"] == pytest.approx(0.08)
    assert nyquist["hann"] == pytest.approx(0.0, abs=1e-12)
    cut = ramp_filter(d, spacing, "ram-lak", 0.5)
    assert torch.all(cut[length // 4 + 1:] == 0) and torch.equal(cut[:length // 4 + 1], h[:length // 4 + 1])


def test_angular_weight() -> None:
    assert angular_weight(PARALLEL) == pytest.approx(math.pi / 180)
    assert angular_weight(FAN) == pytest.approx(2 * math.pi / 360)
    wedge = parallel_geometry((8, 8), limited_angle_angles(120, step_deg=2))
    assert angular_weight(wedge) == pytest.approx(math.radians(2))
    assert angular_weight(parallel_geometry((8, 8), [0.3])) == pytest.approx(math.pi)


def test_fbp_dtype_and_bad_input() -> None:
    g = parallel_geometry((16, 16), sparse_view_angles(20))
    y = make_ct_operator(g, "torch", dtype=torch.float64)(smooth_phantom(16).double())
    assert fbp(y, g, "hann").dtype == torch.float64
    with pytest.raises(UserError, match="does not match"):
        fbp(y[:, :-1], g)
    with pytest.raises(UserError, match="\\[Z, A, D\\]"):
        fbp(y[0], g)
    with pytest.raises(UserError, match="unknown FBP filter"):
        fbp(y, g, "butterworth")
    with pytest.raises(UserError, match="frequency_scaling"):
        fbp(y, g, frequency_scaling=1.5)
