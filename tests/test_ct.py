"""CT geometry, angle helpers, operator units/orientation and ASTRA vs torch agreement."""

from __future__ import annotations

import gc
import json
import math

import numpy as np
import pytest
import torch

from medrecon.errors import UserError
from medrecon.physics import ct
from medrecon.physics.ct import (CTGeometry, GeometryError, default_detector_count, fan_geometry,
                                 limited_angle_angles, make_ct_operator, parallel_geometry,
                                 sparse_view_angles)


# -- angle helpers -----------------------------------------------------------------------------
def test_sparse_view_angles_exact() -> None:
    np.testing.assert_allclose(sparse_view_angles(8), np.deg2rad(np.arange(8) * 22.5), rtol=0,
                               atol=1e-15)
    np.testing.assert_allclose(sparse_view_angles(8, "fan"), np.deg2rad(np.arange(8) * 45.0),
                               rtol=0, atol=1e-15)
    a = sparse_view_angles(180)
    assert a.dtype == np.float64 and a.shape == (180,) and a[0] == 0.0
    assert a[-1] == pytest.approx(math.radians(179.0), abs=1e-15)
    assert sparse_view_angles(1, "fan").tolist() == [0.0]


def test_limited_angle_angles_exact() -> None:
    a = limited_angle_angles(120)
    assert a.shape == (120,)
    np.testing.assert_allclose(np.rad2deg(a), np.arange(120.0), rtol=0, atol=1e-12)
    b = limited_angle_angles(90, start_deg=30, step_deg=0.5)
    assert b.shape == (180,)
    np.testing.assert_allclose(np.rad2deg(b), 30 + 0.5 * np.arange(180), rtol=0, atol=1e-12)
    # floating-point wedges: 0.3 / 0.1 is not exactly 3, the count still is
    assert limited_angle_angles(0.3, step_deg=0.1).shape == (3,)
    assert limited_angle_angles(0.7, step_deg=0.1).shape == (7,)
    assert limited_angle_angles(1.5, step_deg=1.0).shape == (2,)


@pytest.mark.parametrize("call", [lambda: sparse_view_angles(0), lambda: sparse_view_angles(2.5),
                                  lambda: sparse_view_angles(8, "cone"),
                                  lambda: limited_angle_angles(0), lambda: limited_angle_angles(-5),
                                  lambda: limited_angle_angles(90, step_deg=0),
                                  lambda: limited_angle_angles(400)])
def test_angle_helpers_reject_bad_input(call) -> None:
    with pytest.raises(GeometryError):
        call()


# -- geometry -----------------------------------------------------------------------------------
def test_default_detector_count() -> None:
    assert default_detector_count((256, 256)) == 363        # ceil(256 sqrt 2), as published
    assert default_detector_count((200, 256)) == 363
    assert default_detector_count((64, 64), pixel_size=0.5, detector_spacing=0.5) == 91
    assert default_detector_count((64, 64), pixel_size=1.0, detector_spacing=2.0) == 46
    # fan: shadow of the circle of radius r = 32 sqrt 2 on the detector, spacing ps * M
    r, rs, rd = 32 * math.sqrt(2), 100.0, 50.0
    expected = math.ceil(2 * (rs + rd) * r / math.sqrt(rs ** 2 - r ** 2) / (1.5))
    assert default_detector_count((64, 64), 1.0, None, rs, rd) == expected
    assert fan_geometry((64, 64), [0.0], rs, rd).n_detectors == expected
    assert expected > default_detector_count((64, 64))


def test_geometry_round_trip_through_json() -> None:
    for g in (parallel_geometry((24, 32), sparse_view_angles(7), pixel_size=0.7),
              fan_geometry((32, 32), limited_angle_angles(90, 10, 3), 80.0, 30.0, 0.5, 50, 0.9)):
        back = CTGeometry.from_dict(json.loads(json.dumps(g.to_dict())))
        assert back == g and hash(back) == hash(g)
        assert back.angles_array.dtype == np.float64
        np.testing.assert_array_equal(back.angles_array, g.angles_array)


def test_geometry_accepts_numpy_angles_and_reports_shapes() -> None:
    g = CTGeometry("parallel", np.linspace(0, 1, 5), 10, 1.0, (8, 9))
    assert isinstance(g.angles, tuple) and g.n_angles == 5
    assert g.sinogram_shape == (5, 10) and g.magnification == 1.0
    f = fan_geometry((8, 8), [0.0, 1.0], 40.0, 20.0)
    assert f.magnification == pytest.approx(1.5) and f.detector_spacing == pytest.approx(1.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(beam="fan"), "source_origin and origin_detector"),
    (dict(angles=()), "non-empty"),
    (dict(angles=(0.0, float("nan"))), "NaN"),
    (dict(beam="cone"), "beam"),
    (dict(n_detectors=0), "n_detectors"),
    (dict(n_detectors="many"), "n_detectors"),
    (dict(detector_spacing=-1.0), "detector_spacing"),
    (dict(image_shape=(8,)), "image_shape"),
    (dict(pixel_size=0), "pixel_size"),
    (dict(source_origin=50.0, origin_detector=10.0), "only for fan"),
    (dict(beam="fan", source_origin=5.0, origin_detector=10.0), "inside"),
    (dict(beam="fan", source_origin=50.0, origin_detector=-1.0), "origin_detector"),
])
def test_geometry_validation(kwargs, match) -> None:
    base = dict(beam="parallel", angles=(0.0, 0.5), n_detectors=12, detector_spacing=1.0,
                image_shape=(8, 8))
    base.update(kwargs)
    with pytest.raises(GeometryError, match=match) as info:
        CTGeometry(**base)
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)


def test_from_dict_rejects_missing_and_unknown_keys() -> None:
    d = parallel_geometry((8, 8), [0.0]).to_dict()
    with pytest.raises(GeometryError, match="missing keys \\['angles'\\]"):
        CTGeometry.from_dict({k: v for k, v in d.items() if k != "angles"})
    with pytest.raises(GeometryError, match="unknown keys \\['spin'\\]"):
        CTGeometry.from_dict({**d, "spin": 1})


# -- operators: units, orientation, agreement -------------------------------------------------
BACKENDS = ["astra", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pixel_size", [1.0, 0.5])
def test_line_integrals_in_mm(backend: str, pixel_size: float) -> None:
    g = parallel_geometry((16, 16), [0.0, math.pi / 2, math.pi / 4], pixel_size)
    op = make_ct_operator(g, backend)
    sino = op(torch.ones(1, 16, 16))
    centre = sino[0, :, g.n_detectors // 2]
    # through the centre of a 16-pixel square: 16 px straight, 16 sqrt 2 px along the diagonal
    expected = torch.tensor([16.0, 16.0, 16 * math.sqrt(2)]) * pixel_size
    torch.testing.assert_close(centre[:2], expected[:2], rtol=1e-5, atol=1e-5)
    assert float(centre[2]) == pytest.approx(float(expected[2]), rel=0.03)


@pytest.mark.parametrize("backend", BACKENDS)
def test_orientation_convention(backend: str) -> None:
    """Pixel (row 1, col 4) of 16 x 16 sits at x = -3.5, y = +6.5 mm (row 0 is the top)."""
    g = parallel_geometry((16, 16), [0.0, math.pi / 2], n_detectors=24)
    img = torch.zeros(1, 16, 16)
    img[0, 1, 4] = 1.0
    sino = make_ct_operator(g, backend)(img)[0]
    # bin index of s = x cos + y sin is s + (24 - 1) / 2
    assert int(sino[0].argmax()) == 8 and float(sino[0, 8]) == pytest.approx(1.0, abs=1e-5)
    assert int(sino[1].argmax()) == 18 and float(sino[1, 18]) == pytest.approx(1.0, abs=1e-5)


def _blobs(n: int) -> torch.Tensor:
    c = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) / (n / 2)
    y, x = torch.meshgrid(-c, c, indexing="ij")
    a = torch.exp(-((x - 0.2) ** 2 / 0.15 + (y + 0.1) ** 2 / 0.08))
    b = 0.5 * torch.exp(-((x + 0.3) ** 2 + (y - 0.3) ** 2) / 0.05)
    return torch.stack([a + b, a.T]).float()


@pytest.mark.parametrize("beam, tolerance", [("parallel", 1e-4), ("fan", 1e-2)])
def test_torch_matches_astra(beam: str, tolerance: float) -> None:
    """Same geometry: torch Joseph vs ASTRA "linear" (parallel) / "line_fanflat" (fan)."""
    n = 48
    angles = sparse_view_angles(30, beam)
    g = (parallel_geometry((n, n), angles, 0.8) if beam == "parallel"
         else fan_geometry((n, n), angles, 90.0, 60.0, 0.8))
    x = _blobs(n)
    a, t = make_ct_operator(g, "astra"), make_ct_operator(g, "torch")
    assert a.projector_kind == ("linear" if beam == "parallel" else "line_fanflat")
    ya, yt = a(x), t(x)
    err = float((ya - yt).norm() / ya.norm())
    assert err < tolerance, f"{beam}: torch vs ASTRA relative error {err:.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_slices_are_independent(backend: str) -> None:
    g = fan_geometry((20, 20), sparse_view_angles(9, "fan"), 50.0, 20.0)
    op = make_ct_operator(g, backend)
    x = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(3))
    whole = op(x)
    for z in range(3):
        torch.testing.assert_close(whole[z:z + 1], op(x[z:z + 1]))
    assert op(x[:0]).shape == (0, 9, g.n_detectors)


def test_float64_operators_match_float32() -> None:
    g = parallel_geometry((20, 20), sparse_view_angles(12))
    x = _blobs(20)[:1]
    for backend in BACKENDS:
        op64 = make_ct_operator(g, backend, dtype=torch.float64)
        y64 = op64(x.double())
        assert y64.dtype == torch.float64 and op64.adjoint(y64).dtype == torch.float64
        torch.testing.assert_close(y64.float(), make_ct_operator(g, backend)(x), rtol=1e-5,
                                   atol=1e-5)


def test_astra_projector_kinds_and_errors() -> None:
    g = parallel_geometry((16, 16), sparse_view_angles(6))
    f = fan_geometry((16, 16), sparse_view_angles(6, "fan"), 40.0, 20.0)
    assert make_ct_operator(g, "astra", projector="strip").projector_kind == "strip"
    assert make_ct_operator(f, "astra", projector="strip_fanflat").projector_kind == "strip_fanflat"
    with pytest.raises(GeometryError, match="does not support fan"):
        make_ct_operator(f, "astra", projector="linear")
    with pytest.raises(GeometryError, match="backend"):
        make_ct_operator(g, "odl")
    with pytest.raises(GeometryError, match="dtype"):
        make_ct_operator(g, "torch", dtype=torch.float16)
    if not ct.astra_cuda_available():
        with pytest.raises(GeometryError, match="cannot run on cuda"):
            make_ct_operator(g, "astra", device="cuda")
    assert make_ct_operator(g).backend == "torch"          # auto on CPU: the faster torch projector


def test_astra_projectors_are_freed() -> None:
    import astra

    g = parallel_geometry((16, 16), sparse_view_angles(6))
    ids = []
    for _ in range(5):
        op = make_ct_operator(g, "astra")
        op(torch.ones(2, 16, 16))
        ids.append(op._impl.pid)
    del op
    gc.collect()
    for pid in ids:
        with pytest.raises(Exception, match="not found"):
            astra.projector.is_cuda(pid)
