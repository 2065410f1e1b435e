import numpy as np
import pytest
from gradcheck import assert_jacobian
from named_errors import assert_refusal_names_the_module

import pymodules as pm

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


# -- NumPy references -------------------------------------------------------------------------

def _np_pad(x, axis, before, after, value=0.0):
    """x padded (or, for negative counts, cropped) on the axes from ``axis``."""
    for i, (b, a) in enumerate(zip(before, after, strict=True)):
        ax = axis + i
        if b < 0:
            x = np.take(x, range(-b, x.shape[ax]), axis=ax)
        if a < 0:
            x = np.take(x, range(0, x.shape[ax] + a), axis=ax)
        widths = [(0, 0)] * x.ndim
        widths[ax] = (max(b, 0), max(a, 0))
        x = np.pad(x, widths, constant_values=value)
    return x


def _np_bilinear(x, oh, ow, align):
    """TensorFlow's resize_bilinear without half-pixel centres, on NCHW."""
    h, w = x.shape[-2:]

    def coords(n, m):
        s = (n - 1) / (m - 1) if align and m > 1 else n / m
        f = np.arange(m) * s
        lo = np.minimum(f.astype(int), n - 1)
        return lo, np.minimum(lo + 1, n - 1), f - lo

    y0, y1, ly = coords(h, oh)
    x0, x1, lx = coords(w, ow)
    top = x[..., y0, :][..., x0] * (1 - lx) + x[..., y0, :][..., x1] * lx
    bot = x[..., y1, :][..., x0] * (1 - lx) + x[..., y1, :][..., x1] * lx
    return top * (1 - ly)[:, None] + bot * ly[:, None]


# -- forward against NumPy, both dtypes -------------------------------------------------------

FORWARD = [  # (layer, input shape, reference of x)
    (lambda d: pm.SpatialZeroPadding(1, 2, 0, 3, dtype=d), (2, 3, 4, 5),
     lambda x: _np_pad(x, 2, (0, 1), (3, 2))),
    (lambda d: pm.SpatialZeroPadding(-1, 2, 1, -2, dtype=d), (3, 5, 4),
     lambda x: _np_pad(x, 1, (1, -1), (-2, 2))),
    (lambda d: pm.Cropping2D([1, 2], [0, 1], dtype=d), (2, 3, 6, 5),
     lambda x: x[:, :, 1:-2, 0:-1]),
    (lambda d: pm.Cropping2D([2, 0], [1, 1], "NHWC", dtype=d), (2, 6, 5, 3),
     lambda x: x[:, 2:, 1:-1, :]),
    (lambda d: pm.Cropping3D([1, 1], [0, 2], [2, 1], dtype=d), (2, 2, 4, 5, 6),
     lambda x: x[:, :, 1:-1, 0:-2, 2:-1]),
    (lambda d: pm.Cropping3D([0, 1], [1, 0], [1, 1], "NDHWC", dtype=d), (2, 4, 5, 6, 3),
     lambda x: x[:, 0:-1, 1:, 1:-1, :]),
    (lambda d: pm.Padding(1, 2, 2, dtype=d), (3, 4, 5),
     lambda x: _np_pad(x, 1, (0,), (2,))),
    (lambda d: pm.Padding(1, -2, 2, 1.5, dtype=d), (3, 4, 5),
     lambda x: _np_pad(x, 1, (2,), (0,), 1.5)),
    (lambda d: pm.Padding(1, 3, 1, -1.0, dtype=d), (4,),  # one sample: the axis moves down
     lambda x: _np_pad(x, 0, (0,), (3,), -1.0)),
    (lambda d: pm.Padding(2, 2, 2, 0.5, nIndex=2, dtype=d), (3, 4, 5),  # 1 entry in from the end
     lambda x: np.concatenate([x[..., :4], np.full((3, 4, 2), 0.5), x[..., 4:]], axis=2)),
    (lambda d: pm.Padding(2, -1, 2, 0.5, nIndex=3, dtype=d), (3, 4, 5),
     lambda x: np.concatenate([x[..., :2], np.full((3, 4, 1), 0.5), x[..., 2:]], axis=2)),
    (lambda d: pm.UpSampling1D(3, dtype=d), (2, 4, 5), lambda x: np.repeat(x, 3, axis=1)),
    (lambda d: pm.UpSampling2D([2, 3], dtype=d), (2, 3, 4, 5),
     lambda x: np.repeat(np.repeat(x, 2, axis=2), 3, axis=3)),
    (lambda d: pm.UpSampling2D([2, 2], dtype=d), (2, 3, 4, 5),
     lambda x: np.repeat(np.repeat(x, 2, axis=2), 2, axis=3)),
    (lambda d: pm.UpSampling2D([3, 2], "NHWC", dtype=d), (2, 4, 5, 3),
     lambda x: np.repeat(np.repeat(x, 3, axis=1), 2, axis=2)),
    (lambda d: pm.UpSampling3D([2, 1, 3], dtype=d), (2, 3, 2, 4, 5),
     lambda x: np.repeat(np.repeat(np.repeat(x, 2, axis=2), 1, axis=3), 3, axis=4)),
    (lambda d: pm.ResizeBilinear(7, 9, dtype=d), (2, 3, 4, 5),
     lambda x: _np_bilinear(x, 7, 9, False)),
    (lambda d: pm.ResizeBilinear(3, 2, alignCorners=True, dtype=d), (2, 3, 4, 5),
     lambda x: _np_bilinear(x, 3, 2, True)),
    (lambda d: pm.ResizeBilinear(6, 1, dataFormat="NHWC", dtype=d), (2, 4, 5, 3),
     lambda x: _np_bilinear(x.transpose(0, 3, 1, 2), 6, 1, False).transpose(0, 2, 3, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(FORWARD)))
def test_forward_matches_numpy(case, dtype, rng):
    make, shape, ref = FORWARD[case]
    m = make(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y = m.forward(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=tol(dtype), atol=tol(dtype))
    # the output buffer is reused by a second forward of the same shape
    assert m.forward(x) is y


@pytest.mark.parametrize("case", range(len(FORWARD)))
def test_jacobian(case, rng):
    make, shape, _ = FORWARD[case]
    assert_jacobian(make(np.float64), rng.standard_normal(shape))


@pytest.mark.parametrize("case", range(len(FORWARD)))
def test_backward_is_the_adjoint(case, rng):
    """<gradOutput, J x> = <J^T gradOutput, x>, float32 too (the layers are linear)."""
    make, shape, _ = FORWARD[case]
    for dtype in DTYPES:
        m = make(dtype)
        x = rng.standard_normal(shape).astype(dtype)
        y = m.forward(x).astype(np.float64)
        if isinstance(m, pm.Padding) and m.value != 0:
            y = y - m.forward(np.zeros_like(x)).astype(np.float64)  # the affine part
            m.forward(x)
        g = rng.standard_normal(y.shape).astype(dtype)
        gi = m.backward(x, g)
        assert gi.shape == x.shape and gi.dtype == dtype
        np.testing.assert_allclose(np.vdot(g, y), np.vdot(gi, x), rtol=1e-4 if dtype ==
                                   np.float32 else 1e-10)


# -- the PyTorch oracle -----------------------------------------------------------------------

def _torch_check(torch, m, fn, x, dtype):
    xt = torch.tensor(x, requires_grad=True)
    yt = fn(xt)
    y = m.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol(dtype), atol=tol(dtype))
    go = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(go))
    np.testing.assert_allclose(m.backward(x, go), xt.grad.numpy(), rtol=tol(dtype) * 10,
                               atol=tol(dtype) * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_and_cropping_match_torch(torch, dtype, rng):
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    _torch_check(torch, pm.SpatialZeroPadding(2, -1, -2, 3, dtype=dtype),
                 lambda t: F.pad(t, (2, -1, -2, 3)), x, dtype)
    _torch_check(torch, pm.Cropping2D([1, 2], [3, 0], dtype=dtype),
                 lambda t: F.pad(t, (-3, 0, -1, -2)), x, dtype)
    _torch_check(torch, pm.Padding(3, -2, 3, 0.25, dtype=dtype),
                 lambda t: F.pad(t, (2, 0), value=0.25), x, dtype)
    v = rng.standard_normal((2, 3, 4, 5, 6)).astype(dtype)
    _torch_check(torch, pm.Cropping3D([1, 0], [1, 2], [0, 3], dtype=dtype),
                 lambda t: F.pad(t, (0, -3, -1, -2, -1, 0)), v, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_upsampling_matches_torch(torch, dtype, rng):
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    _torch_check(torch, pm.UpSampling2D([2, 3], dtype=dtype),
                 lambda t: F.interpolate(t, scale_factor=(2, 3), mode="nearest"), x, dtype)
    v = rng.standard_normal((2, 2, 3, 4, 5)).astype(dtype)
    _torch_check(torch, pm.UpSampling3D([2, 3, 1], dtype=dtype),
                 lambda t: F.interpolate(t, scale_factor=(2, 3, 1), mode="nearest"), v, dtype)
    s = rng.standard_normal((2, 4, 3)).astype(dtype)
    _torch_check(torch, pm.UpSampling1D(2, dtype=dtype),
                 lambda t: F.interpolate(t.transpose(1, 2), scale_factor=2,
                                         mode="nearest").transpose(1, 2), s, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [(7, 9), (3, 2), (1, 4), (4, 5)])
def test_resize_bilinear_with_align_corners_matches_torch(torch, dtype, size, rng):
    # PyTorch's align_corners=True maps the corners as BigDL's alignCorners does. Without it
    # PyTorch samples at half-pixel centres and BigDL (TensorFlow's legacy resize) does not:
    # that case is checked against the NumPy reference above.
    x = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    m = pm.ResizeBilinear(*size, alignCorners=True, dtype=dtype)
    _torch_check(torch, m, lambda t: torch.nn.functional.interpolate(
        t, size=size, mode="bilinear", align_corners=True), x, dtype)


# -- contract ---------------------------------------------------------------------------------

def test_defaults_follow_bigdl():
    p = pm.Padding(1, 2, 3)
    assert (p.value, p.nIndex) == (0.0, 1)
    assert pm.Cropping2D([0, 0], [0, 0]).dataFormat == "NCHW"
    assert pm.Cropping3D([0, 0], [0, 0], [0, 0]).dataFormat == "NCDHW"
    assert pm.UpSampling2D([2, 2]).dataFormat == "NCHW"
    r = pm.ResizeBilinear(3, 4)
    assert (r.alignCorners, r.dataFormat) == (False, "NCHW")
    assert pm.SpatialZeroPadding(1, 2, 3, 4).parameters() == ([], [])


def test_same_size_resize_is_the_identity(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    for align in (False, True):
        m = pm.ResizeBilinear(4, 5, align, dtype=np.float64)
        np.testing.assert_array_equal(m.forward(x), x)


def test_nan_comes_through(rng):
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    for m in (pm.UpSampling2D([2, 2]), pm.ResizeBilinear(5, 7), pm.SpatialZeroPadding(1, 1, 1, 1),
              pm.ResizeBilinear(5, 7, True)):
        assert np.isnan(m.forward(x)).any(), m


@pytest.mark.parametrize("make,x,match", [
    (lambda: pm.SpatialZeroPadding(1, 1, 1, 1), np.zeros((4, 4), np.float32),
     r"input must be 3-D or 4-D, got 2-D"),
    (lambda: pm.SpatialZeroPadding(-2, -2, 0, 0), np.zeros((1, 3, 4), np.float32),
     r"axis 2 of size 4, padded by -2 and -2, leaves nothing"),
    (lambda: pm.Cropping2D([2, 2], [0, 0]), np.zeros((1, 1, 4, 4), np.float32),
     r"axis 2 of size 4, padded by -2 and -2, leaves nothing"),
    (lambda: pm.Cropping3D([0, 0], [0, 0], [0, 0]), np.zeros((1, 1, 4, 4), np.float32),
     r"input must be 5-D, got 4-D"),
    (lambda: pm.Padding(3, 1, 2), np.zeros((2, 3, 4), np.float32),
     r"dim 3 is out of range for an input of shape \(2, 3, 4\)"),
    (lambda: pm.Padding(1, 1, 1, nIndex=6), np.zeros((2, 4), np.float32),
     r"nIndex 6 is out of range for 4 entries on axis 1"),
    (lambda: pm.UpSampling1D(2), np.zeros((2, 4), np.float32), r"input must be 3-D, got 2-D"),
    (lambda: pm.UpSampling2D([2, 2]), np.zeros((2, 4, 4), np.float32),
     r"input must be 4-D, got 3-D"),
    (lambda: pm.ResizeBilinear(3, 3), np.zeros((2, 1, 0, 4), np.float32),
     r"an empty image cannot be resized"),
    (lambda: pm.ResizeBilinear(3, 3), np.zeros((2, 1, 4, 4), np.float64),
     r"input has dtype float64, expected float32"),
])
def test_errors_name_the_module_and_numbers(make, x, match):
    assert_refusal_names_the_module(make, x, match, TypeError if "dtype" in match else ValueError)


@pytest.mark.parametrize("make,match", [
    (lambda: pm.Cropping2D([1, 2, 3], [0, 0]), "heightCrop must hold 2 integers"),
    (lambda: pm.Cropping2D([1, -1], [0, 0]), "heightCrop must be >= 0"),
    (lambda: pm.Cropping2D([1, 1], [0, 0], "NWHC"), "dataFormat must be one of NCHW, NHWC"),
    (lambda: pm.UpSampling2D([0, 2]), "size must be >= 1"),
    (lambda: pm.UpSampling1D(0), "length must be >= 1"),
    (lambda: pm.ResizeBilinear(0, 3), "output size must be >= 1"),
    (lambda: pm.Padding(1, 1, 1, nIndex=0), "nIndex must be >= 1"),
])
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_non_integer_sizes_are_refused():
    with pytest.raises(TypeError, match="padLeft must be an integer"):
        pm.SpatialZeroPadding(1.5, 0, 0, 0)
    with pytest.raises(TypeError, match="size must be an integer"):
        pm.UpSampling3D([2, 2.5, 1])


def test_strided_input_is_made_contiguous(rng):
    x = rng.standard_normal((2, 3, 8, 5)).astype(np.float32)[:, :, ::2]
    m = pm.UpSampling2D([2, 2])
    np.testing.assert_array_equal(m.forward(x), np.repeat(np.repeat(x, 2, 2), 2, 3))
