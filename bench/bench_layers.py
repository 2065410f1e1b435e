"""Layer benchmarks: pymodules against NumPy and (when installed) PyTorch, one thread.

One row per (operation, dtype, shape): median time of many runs after a warm-up, the
contenders timed in alternating blocks, and the ratios to the reference columns.
Run: python bench/bench_layers.py [section ...]
Figures taken while other processes load the machine are noisy: re-run on a quiet one.
"""

import sys
import timeit

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

import pymodules as pm

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the PyTorch columns stay empty
    torch = None


def _calls(fn, min_time=2e-3) -> int:
    """How many calls of ``fn`` (after a warm-up) last at least ``min_time``."""
    for _ in range(3):
        fn()
    number = 1
    while timeit.timeit(fn, number=number) < min_time:
        number *= 2
    return number


def median_us(fn, repeat=41, min_time=2e-3):
    """Median over ``repeat`` timings of ``fn``, each of enough calls to last ``min_time``."""
    number = _calls(fn, min_time)
    return float(np.median(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6)


def interleaved_us(fns, repeat=41, min_time=2e-3):
    """Median time of each of ``fns`` (None: skipped), timed in alternating blocks within
    one loop, so that a change in the machine's load reaches every contender alike."""
    numbers = [None if f is None else _calls(f, min_time) for f in fns]
    runs = [[] for _ in fns]
    for _ in range(repeat):
        for f, n, r in zip(fns, numbers, runs, strict=True):
            if f is not None:
                r.append(timeit.timeit(f, number=n) / n * 1e6)
    return [None if not r else float(np.median(r)) for r in runs]


def row(op, dtype, shape, ours, ref_name=None, ref=None, torch_fn=None):
    t_ours, *others = interleaved_us([ours, ref, torch_fn])
    cols = [f"{op:<24}", f"{np.dtype(dtype).name:<8}", f"{str(shape):<18}", f"{t_ours:10.1f}"]
    for t in others:
        if t is None:
            cols += [f"{'-':>10}", f"{'-':>7}"]
        else:
            cols += [f"{t:10.1f}", f"{t_ours / t:7.2f}"]
    print("  ".join(cols) + (f"   ({ref_name})" if ref_name else ""), flush=True)


def header(title):
    print(f"\n== {title}")
    print("  ".join([f"{'operation':<24}", f"{'dtype':<8}", f"{'shape':<18}",
                     f"{'ours us':>10}", f"{'ref us':>10}", f"{'ratio':>7}",
                     f"{'torch us':>10}", f"{'ratio':>7}"]))


def _torch(x):
    return None if torch is None else torch.from_numpy(x)


def bench_activations():
    header("activations (ratio = ours / reference; ReLU's reference is np.copyto, the "
           "memory-bandwidth bound)")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        # One function per group: each closure sees the arrays and layers of its own dtype.
        _pointwise_rows(dtype, rng)
        _softmax_rows(dtype, rng)
        _batchnorm_rows(dtype, rng)
        _lrn_rows(dtype, rng)


def _pointwise_rows(dtype, rng):
    n = 1 << 20
    x = rng.standard_normal(n).astype(dtype)
    out = np.empty_like(x)
    relu = pm.ReLU(dtype=dtype)
    tx = _torch(x)
    tout = None if torch is None else torch.empty_like(tx)
    row("ReLU forward", dtype, (n,), lambda: relu.forward(x), "np.copyto",
        lambda: np.copyto(out, x),
        None if torch is None else lambda: torch.clamp_min(tx, 0, out=tout))
    g = rng.standard_normal(n).astype(dtype)
    relu.forward(x)
    tg = _torch(g)
    row("ReLU backward", dtype, (n,), lambda: relu.updateGradInput(x, g), "np.multiply",
        lambda: np.multiply(g, x > 0, out=out),
        None if torch is None else lambda: torch.ops.aten.threshold_backward(tg, tx, 0))
    tanh = pm.Tanh(dtype=dtype)
    row("Tanh forward", dtype, (n,), lambda: tanh.forward(x), "np.tanh",
        lambda: np.tanh(x, out=out),
        None if torch is None else lambda: torch.tanh(tx, out=tout))
    tanh.forward(x)
    tanh_out = torch.tanh(tx) if torch is not None else None
    row("Tanh backward", dtype, (n,), lambda: tanh.updateGradInput(x, g), "NumPy",
        lambda: np.multiply(g, 1 - tanh.output * tanh.output, out=out),
        None if torch is None else
        lambda: torch.ops.aten.tanh_backward(tg, tanh_out, grad_input=tout))
    sigmoid = pm.Sigmoid(dtype=dtype)

    def np_sigmoid():
        np.negative(x, out=out)
        np.exp(out, out=out)
        np.add(out, 1, out=out)
        np.reciprocal(out, out=out)

    row("Sigmoid forward", dtype, (n,), lambda: sigmoid.forward(x), "NumPy", np_sigmoid,
        None if torch is None else lambda: torch.sigmoid(tx, out=tout))
    exp = pm.Exp(dtype=dtype)
    row("Exp forward", dtype, (n,), lambda: exp.forward(x), "np.exp",
        lambda: np.exp(x, out=out),
        None if torch is None else lambda: torch.exp(tx, out=tout))


def _softmax_rows(dtype, rng):
    for shape in ((128, 10), (64, 1000)):
        z = rng.standard_normal(shape).astype(dtype)
        lsm = pm.LogSoftMax(dtype=dtype)
        tz = _torch(z)

        def np_lsm(z=z):
            m = z.max(axis=1, keepdims=True)
            return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))

        row("LogSoftMax forward", dtype, shape, lambda lsm=lsm, z=z: lsm.forward(z),
            "NumPy", np_lsm,
            None if torch is None else lambda tz=tz: torch.log_softmax(tz, 1))
        gz = rng.standard_normal(shape).astype(dtype)
        lsm.forward(z)
        tgz = _torch(gz)
        ty = None if torch is None else torch.log_softmax(tz, 1)
        row("LogSoftMax backward", dtype, shape,
            lambda lsm=lsm, z=z, gz=gz: lsm.updateGradInput(z, gz), "NumPy",
            lambda lsm=lsm, gz=gz: gz - np.exp(lsm.output) * gz.sum(axis=1, keepdims=True),
            None if torch is None else lambda tgz=tgz, ty=ty:
            torch.ops.aten._log_softmax_backward_data(tgz, ty, 1, ty.dtype))
    for shape in ((64, 10, 12, 12),):
        z = rng.standard_normal(shape).astype(dtype)
        sm = pm.SoftMax(dtype=dtype)
        tz = _torch(z)

        def np_sm(z=z):
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)

        row("SoftMax forward (chan.)", dtype, shape, lambda sm=sm, z=z: sm.forward(z),
            "NumPy", np_sm, None if torch is None else lambda tz=tz: torch.softmax(tz, 1))


def _batchnorm_rows(dtype, rng):
    for shape in ((64, 256), (64, 6, 24, 24), (16, 64, 16, 16)):
        z = rng.standard_normal(shape).astype(dtype)
        gz = rng.standard_normal(shape).astype(dtype)
        cls = pm.BatchNormalization if len(shape) == 2 else pm.SpatialBatchNormalization
        bn = cls(shape[1], dtype=dtype)
        axes = (0,) if len(shape) == 2 else (0, 2, 3)

        def np_bn(z=z, axes=axes):
            mean = z.mean(axis=axes, keepdims=True)
            return (z - mean) / np.sqrt(z.var(axis=axes, keepdims=True) + 1e-5)

        tbn = tz = tgz = None
        if torch is not None:
            tcls = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
            tbn = tcls(shape[1]).to(torch.float32 if dtype == np.float32 else torch.float64)
            tz, tgz = torch.from_numpy(z), torch.from_numpy(gz)
        row("BN forward (train)", dtype, shape, lambda bn=bn, z=z: bn.forward(z), "NumPy",
            np_bn, None if torch is None else lambda tbn=tbn, tz=tz: tbn(tz))

        def ours_fb(bn=bn, z=z, gz=gz):
            bn.forward(z)
            bn.backward(z, gz)

        def torch_fb(tbn=tbn, tz=tz, tgz=tgz):
            t = tz.detach().requires_grad_()
            tbn(t).backward(tgz)

        row("BN forward+backward", dtype, shape, ours_fb, None, None,
            None if torch is None else torch_fb)


def _lrn_rows(dtype, rng):
    shape = (16, 32, 16, 16)
    z = rng.standard_normal(shape).astype(dtype)
    gz = rng.standard_normal(shape).astype(dtype)
    lrn = pm.SpatialCrossMapLRN(5, 1e-4, 0.75, 2.0, dtype=dtype)

    def lrn_fb():
        lrn.forward(z)
        lrn.backward(z, gz)

    tz, tgz = _torch(z), _torch(gz)

    def torch_lrn_fb():
        t = tz.detach().requires_grad_()
        torch.nn.functional.local_response_norm(t, 5, 1e-4, 0.75, 2.0).backward(tgz)

    row("LRN forward+backward", dtype, shape, lrn_fb, None, None,
        None if torch is None else torch_lrn_fb)


# -- convolution and LeNet ---------------------------------------------------------------------

def _conv_torch(weight, bias, pad):
    w, b = torch.from_numpy(weight), torch.from_numpy(bias)
    return lambda tx: torch.nn.functional.conv2d(tx, w, b, 1, pad)


def bench_conv():
    header("SpatialConvolution 16 -> 32, 3x3, pad 1 (ratio = ours / torch, target <= 1.4)")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _conv_rows(dtype, rng)  # each dtype's closures in a scope of their own


def _conv_rows(dtype, rng):
    shape = (32, 16, 28, 28)
    x = rng.standard_normal(shape).astype(dtype)
    m = pm.SpatialConvolution(16, 32, 3, 3, 1, 1, 1, 1, dtype=dtype)
    g = rng.standard_normal((32, 32, 28, 28)).astype(dtype)
    m.forward(x)
    tx, tg = _torch(x), _torch(g)
    tw = None if torch is None else torch.from_numpy(m.weight)
    fwd = None if torch is None else _conv_torch(m.weight, m.bias, 1)
    row("conv forward", dtype, shape, lambda: m.forward(x), None, None,
        None if torch is None else lambda: fwd(tx))

    def torch_bwd():
        # gradInput, gradWeight and gradBias, without re-running the forward
        torch.ops.aten.convolution_backward(tg, tx, tw, [32], [1, 1], [1, 1], [1, 1], False,
                                            [0, 0], 1, [True, True, True])

    row("conv backward", dtype, shape, lambda: m.backward(x, g), None, None,
        None if torch is None else torch_bwd)


def _lenet_layers(full):
    """LeNet-5 as (pymodules layer, torch layer) factories; ``full`` adds the classifier."""
    trunk = [
        (lambda d: pm.SpatialConvolution(1, 6, 5, 5, dtype=d), lambda: torch.nn.Conv2d(1, 6, 5)),
        (lambda d: pm.Tanh(dtype=d), torch.nn.Tanh),
        (lambda d: pm.SpatialMaxPooling(2, 2, 2, 2, dtype=d), lambda: torch.nn.MaxPool2d(2)),
        (lambda d: pm.SpatialConvolution(6, 12, 5, 5, dtype=d),
         lambda: torch.nn.Conv2d(6, 12, 5)),
        (lambda d: pm.Tanh(dtype=d), torch.nn.Tanh),
        (lambda d: pm.SpatialMaxPooling(2, 2, 2, 2, dtype=d), lambda: torch.nn.MaxPool2d(2)),
    ]
    if not full:
        return trunk
    return trunk + [
        (lambda d: pm.Reshape([192], dtype=d), torch.nn.Flatten),
        (lambda d: pm.Linear(192, 100, dtype=d), lambda: torch.nn.Linear(192, 100)),
        (lambda d: pm.Tanh(dtype=d), torch.nn.Tanh),
        (lambda d: pm.Linear(100, 10, dtype=d), lambda: torch.nn.Linear(100, 10)),
        (lambda d: pm.LogSoftMax(dtype=d), lambda: torch.nn.LogSoftmax(1)),
    ]


def _lenet_rows(name, full, dtype, batch):
    rng = np.random.default_rng(0)
    model = pm.Sequential()
    tlayers = []
    for make, tmake in _lenet_layers(full):
        model.add(make(dtype))
        if torch is not None:
            tlayers.append(tmake())
    x = rng.standard_normal((batch, 1, 28, 28)).astype(dtype)
    g = rng.standard_normal(model.forward(x).shape).astype(dtype)

    def ours():
        model.forward(x)
        model.backward(x, g)

    torch_fb = None
    if torch is not None:
        net = torch.nn.Sequential(*tlayers).to(torch.float32 if dtype == np.float32
                                               else torch.float64)
        with torch.no_grad():
            for p, w in zip(net.parameters(), model.parameters()[0], strict=True):
                p.copy_(torch.from_numpy(w))
        # the input's gradient too, as ours computes it: the same work on both sides
        tx, tg = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(g)

        def torch_fb():
            net(tx).backward(tg)

    row(name, dtype, (batch, 1, 28, 28), ours, None, None, torch_fb)


def bench_lenet():
    header("LeNet-5 forward+backward on 28x28 (ratio = ours / torch eager autograd; target: "
           "<= 1 at batch 64, <= 0.5 at batch 1)")
    missing = [n for n in ("Tanh", "Reshape", "LogSoftMax") if not hasattr(pm, n)]
    for dtype in (np.float32, np.float64):
        for batch in (1, 64):
            if not hasattr(pm, "Tanh"):
                break
            _lenet_rows("LeNet conv/pool trunk", False, dtype, batch)
            if not missing:
                _lenet_rows("LeNet-5", True, dtype, batch)
    if missing:
        print(f"# LeNet-5 rows need pm.{', pm.'.join(missing)}: not in this build")


def bench_upsampling():
    header("UpSampling2D x2, nearest (ratio = ours / torch upsample_nearest2d, target <= 1.0)")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _upsampling_rows(dtype, rng)


def _upsampling_rows(dtype, rng):
    shape = (32, 16, 28, 28)
    x = rng.standard_normal(shape).astype(dtype)
    m = pm.UpSampling2D([2, 2], dtype=dtype)
    g = rng.standard_normal((32, 16, 56, 56)).astype(dtype)
    m.forward(x)
    tx, tg = _torch(x), _torch(g)
    row("UpSampling2D forward", dtype, shape, lambda: m.forward(x), "np.repeat x2",
        lambda: np.repeat(np.repeat(x, 2, axis=2), 2, axis=3),
        None if torch is None else
        lambda: torch.nn.functional.interpolate(tx, scale_factor=2, mode="nearest"))
    row("UpSampling2D backward", dtype, shape, lambda: m.backward(x, g), "NumPy sum",
        lambda: g.reshape(32, 16, 28, 2, 28, 2).sum(axis=(3, 5)),
        None if torch is None else
        lambda: torch.ops.aten.upsample_nearest2d_backward(tg, [56, 56], list(shape)))


def bench_conv3d():
    header("VolumetricConvolution 4 -> 8, 3x3x3, pad 1 (ratio = ours / torch conv3d, "
           "target <= 1.25)")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _conv3d_rows(dtype, rng)


def _conv3d_rows(dtype, rng):
    shape = (8, 4, 16, 16, 16)
    x = rng.standard_normal(shape).astype(dtype)
    m = pm.VolumetricConvolution(4, 8, 3, 3, 3, 1, 1, 1, 1, 1, 1, dtype=dtype)
    g = rng.standard_normal((8, 8, 16, 16, 16)).astype(dtype)
    m.forward(x)
    tx, tg = _torch(x), _torch(g)
    tw = None if torch is None else torch.from_numpy(m.weight)
    tb = None if torch is None else torch.from_numpy(m.bias)
    row("conv3d forward", dtype, shape, lambda: m.forward(x), None, None,
        None if torch is None else lambda: torch.nn.functional.conv3d(tx, tw, tb, 1, 1))

    def torch_bwd():
        # gradInput, gradWeight and gradBias, without re-running the forward
        torch.ops.aten.convolution_backward(tg, tx, tw, [8], [1, 1, 1], [1, 1, 1], [1, 1, 1],
                                            False, [0, 0, 0], 1, [True, True, True])

    row("conv3d backward", dtype, shape, lambda: m.backward(x, g), None, None,
        None if torch is None else torch_bwd)


SECTIONS = {"activations": bench_activations, "conv": bench_conv, "lenet": bench_lenet,
            "upsampling": bench_upsampling, "conv3d": bench_conv3d}


# -- layer normalization and reductions -------------------------------------------------------

def bench_reductions():
    header("LayerNormalization and Sum forward+backward (ratio = ours / torch eager autograd; "
           "target <= 1)")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _layernorm_rows(dtype, rng)
        _sum_rows(dtype, rng)


def _layernorm_rows(dtype, rng):
    shape = (64, 128, 768)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    m = pm.LayerNormalization(768, dtype=dtype)

    def ours():
        m.forward(x)
        m.backward(x, g)

    torch_fb = None
    if torch is not None:
        tln = torch.nn.LayerNorm(768, eps=1e-6).to(torch.float32 if dtype == np.float32
                                                   else torch.float64)
        tx, tg = torch.from_numpy(x), torch.from_numpy(g)

        def torch_fb():
            t = tx.detach().requires_grad_()
            tln(t).backward(tg)

    row("LayerNorm fwd+bwd", dtype, shape, ours, None, None, torch_fb)


def _sum_rows(dtype, rng):
    shape = (64, 1000)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape[0]).astype(dtype)
    m = pm.Sum(1, dtype=dtype)

    def ours():
        m.forward(x)
        m.backward(x, g)

    def np_fb():
        x.sum(axis=1)
        return np.repeat(g[:, None], shape[1], axis=1)

    torch_fb = None
    if torch is not None:
        tx, tg = torch.from_numpy(x), torch.from_numpy(g)

        def torch_fb():
            t = tx.detach().requires_grad_()
            t.sum(1).backward(tg)

    row("Sum(1) fwd+bwd", dtype, shape, ours, "NumPy", np_fb, torch_fb)


SECTIONS["reductions"] = bench_reductions
def _fb(m, x, g):
    """forward then backward of module ``m``."""
    def run():
        m.forward(x)
        m.backward(x, g)
    return run


def _torch_fb(f, params, xs, g):
    """forward then backward of torch function ``f`` on inputs ``xs`` (leaves with grads)."""
    if torch is None:
        return None
    ts = [torch.from_numpy(x.copy()).requires_grad_() for x in xs]
    ps = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    tg = torch.from_numpy(g)

    def run():
        f(*ts, *ps).backward(tg)
    return run


def bench_params():
    header("element-wise parameters and products, forward + backward (ref: NumPy)")
    rng = np.random.default_rng(0)
    dtype = np.float32
    x = rng.standard_normal((32, 64, 28, 28)).astype(dtype)
    m = pm.CMul([1, 64, 1, 1])
    w = m.weight

    def np_cmul(x=x, w=w):  # gradOutput = x
        return x * w, x * w, (x * x).sum(axis=(0, 2, 3))
    row("CMul per channel", dtype, x.shape, _fb(m, x, x), "x * w, its two gradients",
        np_cmul, _torch_fb(lambda a, p: a * p, [w], [x], x))
    x = rng.standard_normal((256, 512)).astype(dtype)
    m = pm.Scale([512])
    w, b = m.weight, m.bias

    def np_scale(x=x, w=w, b=b):
        return x * w + b, x * w, (x * x).sum(0), x.sum(0)
    row("Scale", dtype, x.shape, _fb(m, x, x), "x * w + b, its three gradients", np_scale,
        _torch_fb(lambda a, p, q: a * p + q, [w, b], [x], x))
    x1 = rng.standard_normal((128, 64)).astype(dtype)
    x2 = rng.standard_normal((128, 64)).astype(dtype)
    m = pm.Bilinear(64, 64, 32)
    g = rng.standard_normal((128, 32)).astype(dtype)
    row("Bilinear 64x64->32", dtype, x1.shape, _fb(m, [x1, x2], g), None, None,
        _torch_fb(torch.nn.functional.bilinear if torch else None, [m.weight, m.bias],
                  [x1, x2], g))
    x = rng.standard_normal((64, 256)).astype(dtype)
    m = pm.Cosine(256, 128)
    g = rng.standard_normal((64, 128)).astype(dtype)

    def t_cos(a, p):
        return (a @ p.T) / (p.norm(dim=1) + 1e-12) / (a.norm(dim=1, keepdim=True) + 1e-12)
    row("Cosine 256->128", dtype, x.shape, _fb(m, x, g), None, None,
        _torch_fb(t_cos, [m.weight], [x], g))
    x = rng.standard_normal((128, 64)).astype(dtype)
    m = pm.Euclidean(64, 32)
    g = rng.standard_normal((128, 32)).astype(dtype)
    row("Euclidean 64->32", dtype, x.shape, _fb(m, x, g), None, None,
        _torch_fb(lambda a, p: torch.cdist(a, p.T), [m.weight], [x], g))


SECTIONS["params"] = bench_params


def bench_more_activations():
    header("more activations, noise and copying shape modules (ratio = ours / reference)")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _more_activation_rows(dtype, rng)


def _more_activation_rows(dtype, rng):
    n = 1 << 20
    x = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    out = np.empty_like(x)
    tx, tg = _torch(x), _torch(g)
    F = None if torch is None else torch.nn.functional
    ls = pm.LogSigmoid(dtype=dtype)

    def np_log_sigmoid():
        np.negative(x, out=out)
        np.logaddexp(0, out, out=out)
        np.negative(out, out=out)

    row("LogSigmoid forward", dtype, (n,), lambda: ls.forward(x), "NumPy", np_log_sigmoid,
        None if torch is None else lambda: F.logsigmoid(tx))
    ls.forward(x)
    buf = None if torch is None else torch.ops.aten.log_sigmoid_forward(tx)[1]
    row("LogSigmoid backward", dtype, (n,), lambda: ls.updateGradInput(x, g), "-", None,
        None if torch is None else lambda: torch.ops.aten.log_sigmoid_backward(tg, tx, buf))
    ss = pm.SoftShrink(dtype=dtype)
    row("SoftShrink forward", dtype, (n,), lambda: ss.forward(x), "-", None,
        None if torch is None else lambda: F.softshrink(tx, 0.5))
    ts = pm.TanhShrink(dtype=dtype)
    row("TanhShrink forward", dtype, (n,), lambda: ts.forward(x), "-", None,
        None if torch is None else lambda: F.tanhshrink(tx))
    rr = pm.RReLU(dtype=dtype)
    row("RReLU forward (train)", dtype, (n,), lambda: rr.forward(x), "-", None,
        None if torch is None else lambda: F.rrelu(tx, training=True))
    x4 = rng.standard_normal((32, 64, 16, 16)).astype(dtype)
    sd = pm.SpatialDropout2D(0.3, dtype=dtype)
    t4 = _torch(x4)
    row("SpatialDropout2D fwd", dtype, x4.shape, lambda: sd.forward(x4), "-", None,
        None if torch is None else lambda: F.dropout2d(t4, 0.3, training=True))
    tile = pm.Tile(1, 4, dtype=dtype)
    row("Tile forward", dtype, x4.shape, lambda: tile.forward(x4), "np.tile",
        lambda: np.tile(x4, (1, 4, 1, 1)),
        None if torch is None else lambda: t4.repeat(1, 4, 1, 1))


SECTIONS["more_activations"] = bench_more_activations


def bench_timedistributed():
    header("TimeDistributed(Linear) forward+backward on (batch, time, in) (ref: the same "
           "Linear on the folded (batch * time, in); torch: nn.Linear on the 3-D input)")
    rng = np.random.default_rng(0)
    for batch, time, n_in, n_out in ((4, 8, 16, 16), (16, 32, 64, 128), (64, 32, 256, 256)):
        _timedistributed_row(np.float32, rng, batch, time, n_in, n_out)


def _timedistributed_row(dtype, rng, batch, time, n_in, n_out):
    x = rng.standard_normal((batch, time, n_in)).astype(dtype)
    go = rng.standard_normal((batch, time, n_out)).astype(dtype)
    td, lin = pm.TimeDistributed(pm.Linear(n_in, n_out)), pm.Linear(n_in, n_out)
    x2, g2 = x.reshape(-1, n_in), go.reshape(-1, n_out)

    def ours():
        td.forward(x)
        td.backward(x, go)

    def folded():
        lin.forward(x2)
        lin.backward(x2, g2)

    torch_fn = None
    if torch is not None:
        tlin = torch.nn.Linear(n_in, n_out)
        tx, tg = torch.from_numpy(x).requires_grad_(), torch.from_numpy(go)

        def torch_fn():
            tx.grad = None
            tlin.zero_grad()
            tlin(tx).backward(tg)

    row("TimeDistributed(Linear)", dtype, (batch, time, n_in, n_out), ours, "Linear folded",
        folded, torch_fn)


SECTIONS["timedistributed"] = bench_timedistributed


def bench_lenet_layers():
    header("LeNet-5's convolutions and max pooling at batch 64, forward (ratio = ours / torch)")
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        _lenet_layer_rows(dtype, rng)


def _lenet_layer_rows(dtype, rng):
    for c, o, size, pad in ((1, 6, 28, 2), (6, 16, 14, 0)):
        shape = (64, c, size, size)
        x = rng.standard_normal(shape).astype(dtype)
        m = pm.SpatialConvolution(c, o, 5, 5, 1, 1, pad, pad, dtype=dtype)
        fwd = None if torch is None else _conv_torch(m.weight, m.bias, pad)
        tx = _torch(x)
        row(f"conv {c}->{o} 5x5 forward", dtype, shape, lambda m=m, x=x: m.forward(x), None,
            None, None if torch is None else lambda fwd=fwd, tx=tx: fwd(tx))
    shape = (64, 6, 28, 28)
    x = rng.standard_normal(shape).astype(dtype)
    pool = pm.SpatialMaxPooling(2, 2, 2, 2, dtype=dtype)
    tx = _torch(x)
    row("max pool 2x2 forward", dtype, shape, lambda: pool.forward(x), None, None,
        None if torch is None else lambda: torch.nn.functional.max_pool2d(tx, 2))
    g = rng.standard_normal((64, 6, 14, 14)).astype(dtype)
    pool.forward(x)
    row("max pool 2x2 backward", dtype, shape, lambda: pool.backward(x, g), None, None, None)


SECTIONS["lenetlayers"] = bench_lenet_layers

# -- the 3x3 stride-1 convolution: Winograd F(4x4, 3x3) against im2col + GEMM ------------------

def _cpu_interleaved_us(fns, repeat=15, min_time=5e-3):
    """Median process CPU time per call of each of ``fns`` (None: skipped), in alternating
    blocks (CPU time: other processes on the machine do not count)."""
    import time

    numbers = [None if f is None else _calls(f, min_time) for f in fns]
    runs = [[] for _ in fns]
    for _ in range(repeat):
        for f, n, r in zip(fns, numbers, runs, strict=True):
            if f is not None:
                t = time.process_time()
                for _ in range(n):
                    f()
                r.append((time.process_time() - t) / n * 1e6)
    return [None if not r else float(np.median(r)) for r in runs]


def _conv3x3_kernels(x, m, g):
    """(forward, backward) closures of the Winograd kernels and of im2col + GEMM for the
    layer ``m``'s arguments (the kernels called directly, each with the scratch the layer
    would give it)."""
    from pymodules.engine import conv as K
    from pymodules.engine import conv3x3 as W

    p = m.padW
    args = (1, 1, p, p, 1, 1, 1)
    y = np.empty(g.shape, x.dtype)
    gi, gw, gb = np.empty_like(x), np.zeros_like(m.weight), np.zeros_like(m.bias)
    sc = np.empty(W.conv3x3_scratch_size(x, m.weight, *args, rule=False), x.dtype)
    cols = np.empty(K.conv_columns_shape(x, m.weight, *args), x.dtype)
    size = K.conv_scratch_size(x, m.weight, *args)
    rows = np.empty(size, x.dtype) if size else None

    def wino_fwd():
        W.conv3x3_update_output(x, y, m.weight, m.bias, sc, p, p)

    def wino_bwd():
        W.conv3x3_update_grad_input(x, g, gi, m.weight, sc, p, p)
        W.conv3x3_acc_grad_parameters(x, g, gw, gb, sc, p, p, 1.0, 1.0)

    def gemm_fwd():
        K.conv_update_output(x, y, m.weight, m.bias, cols, *args, rows)

    def gemm_bwd():
        K.conv_update_grad_input(x, g, gi, m.weight, cols, *args)
        K.conv_acc_grad_parameters(x, g, gw, gb, cols, *args, 1.0, 1.0, rows)

    return wino_fwd, wino_bwd, gemm_fwd, gemm_bwd


def bench_conv3x3():
    """The convolution row's acceptance (forward and backward against torch, float32, one
    thread, CPU time) and the rule of conv3x3.pyx's _pays: for each shape the Winograd
    kernels' and im2col + GEMM's forward + backward, which is faster, and which the rule
    picks."""
    from pymodules.engine import conv3x3 as W

    rng = np.random.default_rng(0)
    print("\n== SpatialConvolution 16 -> 32, 3x3, pad 1, float32, (32, 16, 28, 28): median "
          "CPU us per call, speed-up = torch / ours (target >= 1.1)")
    x = rng.standard_normal((32, 16, 28, 28)).astype(np.float32)
    g = rng.standard_normal((32, 32, 28, 28)).astype(np.float32)
    m = pm.SpatialConvolution(16, 32, 3, 3, 1, 1, 1, 1)
    m.forward(x)
    path = "winograd" if m._wino is not None else "im2col + GEMM"
    wino_fwd, wino_bwd, gemm_fwd, gemm_bwd = _conv3x3_kernels(x, m, g)
    tx, tg = _torch(x), _torch(g)
    tfwd = tbwd = None
    if torch is not None:
        tw, tb = torch.from_numpy(m.weight), torch.from_numpy(m.bias)

        def tfwd():
            torch.nn.functional.conv2d(tx, tw, tb, 1, 1)

        def tbwd():
            torch.ops.aten.convolution_backward(tg, tx, tw, [32], [1, 1], [1, 1], [1, 1],
                                                False, [0, 0], 1, [True, True, True])

    t = _cpu_interleaved_us([lambda: m.forward(x), gemm_fwd, tfwd,
                             lambda: m.backward(x, g), gemm_bwd, tbwd])
    for name, ours, gemm, ref in (("forward", t[0], t[1], t[2]),
                                  ("backward", t[3], t[4], t[5])):
        speed = "-" if ref is None else f"{ref / ours:.2f}x"
        torch_us = "-" if ref is None else f"{ref:.0f}"
        print(f"conv {name:<9} layer ({path}) {ours:8.0f} us   im2col + GEMM {gemm:8.0f} us   "
              f"torch {torch_us:>8} us   speed-up vs torch {speed}   vs im2col "
              f"{gemm / ours:.2f}x", flush=True)

    print("\n== 3x3 stride 1, float32: forward + backward, Winograd against im2col + GEMM "
          "(median CPU us); the rule: C >= 3, M >= 8, >= 4 tiles of 4x4 per sample, >= 25 if "
          "C * M >= 4096")
    print(f"{'(N, C, H, W) -> M, pad':<34} {'winograd':>9} {'im2col':>9} {'ratio':>6}  "
          f"{'faster':<9} {'rule':<9}")
    for n, c, h, o, p in ((32, 16, 28, 32, 1), (64, 8, 28, 8, 1), (32, 4, 28, 16, 1),
                          (32, 32, 14, 32, 1), (16, 64, 7, 64, 1), (32, 16, 8, 16, 1),
                          (16, 128, 4, 128, 1), (16, 3, 32, 16, 1), (32, 16, 28, 8, 0),
                          (16, 64, 14, 128, 1), (32, 8, 6, 8, 1), (8, 64, 28, 64, 1)):
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        m = pm.SpatialConvolution(c, o, 3, 3, 1, 1, p, p)
        g = rng.standard_normal(m.forward(x).shape).astype(np.float32)
        wf, wb, gf, gb = _conv3x3_kernels(x, m, g)

        def wino(wf=wf, wb=wb):
            wf()
            wb()

        def gemm(gf=gf, gb=gb):
            gf()
            gb()

        tw, tg = _cpu_interleaved_us([wino, gemm], repeat=7)
        rule = W.conv3x3_scratch_size(x, m.weight, 1, 1, p, p, 1, 1, 1) > 0
        print(f"{str((n, c, h, h)) + f' -> {o}, pad {p}':<34} {tw:9.0f} {tg:9.0f} "
              f"{tw / tg:6.2f}  {'winograd' if tw < tg else 'im2col':<9} "
              f"{'winograd' if rule else 'im2col':<9}", flush=True)


SECTIONS["conv3x3"] = bench_conv3x3


def main(argv):
    for info in threadpool_info():
        print(f"# {info.get('internal_api')} {info.get('version')} "
              f"{info.get('architecture')} ({info.get('filepath')})")
    with threadpool_limits(1):
        for name in argv or SECTIONS:
            SECTIONS[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
