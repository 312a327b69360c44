"""Synthetic identities: deterministic cartoon faces rendered on the fly (no download, no files).

Identity ``k`` of seed ``s`` is a fixed parameter vector (face outline, skin, hair, brows, eyes, nose,
mouth, beard/moles/glasses, preferred background) drawn from a generator seeded by ``(s, k)``; image
``j`` adds jitter seeded by ``(s, k, j)``: pose, yaw, lighting, expression, background, blur and sensor
noise. Every part is an implicit shape evaluated on a coordinate grid and alpha-composited with
sigmoid edges, so a batch renders as a few hundred vectorised tensor ops. Faces follow the ArcFace
112x112 template (``TEMPLATE``), so models and explainers see real-crop geometry at any ``size``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from xcos_lightning.errors import DataFormatError, VerificationSetError

# ArcFace 112x112 landmarks (x, y) in pixels: left eye, right eye, nose tip, mouth corners.
TEMPLATE = ((38.29, 51.70), (73.53, 51.50), (56.03, 71.74), (41.55, 92.37), (70.73, 92.20))

_M64 = (1 << 64) - 1
_N_UNIFORMS = 96  # per identity and per image; more than the draws below use
_HAIR = torch.tensor([[.05, .04, .04], [.22, .13, .07], [.45, .28, .14], [.86, .72, .42],
                      [.62, .24, .09], [.72, .72, .74], [.12, .10, .18]])
_IRIS = torch.tensor([[.22, .42, .75], [.28, .55, .30], [.33, .18, .08], [.50, .56, .62], [.55, .40, .13]])
_FRAME = torch.tensor([[.05, .05, .05], [.75, .60, .20], [.60, .10, .12], [.15, .25, .55], [.55, .55, .58]])
_MASK = torch.tensor([[.92, .93, .95], [.55, .75, .90], [.08, .08, .10], [.85, .55, .65]])
_DARK_SKIN, _LIGHT_SKIN = torch.tensor([.36, .22, .14]).view(1, 3, 1, 1), torch.tensor([.97, .83, .72]).view(1, 3, 1, 1)


def _rgb(r: float, g: float, b: float) -> Tensor:
    return torch.tensor([r, g, b]).view(1, 3, 1, 1)


def _splitmix(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _rng(*keys: int) -> torch.Generator:
    """Generator seeded by a hash of the keys; the first key tags the stream so streams never collide."""
    h = len(keys)
    for k in keys:
        h = _splitmix(h ^ (k & _M64))
    return torch.Generator().manual_seed(h >> 1)


class _Draws:
    """Hands out consecutive columns of uniforms ``(B, N)`` as ``(B, 1, 1, 1)`` tensors; call order is the layout.

    Parameters are ``(B, 1, 1, 1)``, colours ``(B, 3, 1, 1)`` and coordinate maps ``(B, 1, H, W)``, so every
    product broadcasts to an image ``(B, 3, H, W)`` or a coverage map ``(B, 1, H, W)``.
    """

    def __init__(self, u: Tensor, jitter: float = 1.0) -> None:
        self.u, self.i, self.jitter = u, 0, jitter

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        self.i += 1
        return lo + (hi - lo) * self.u[:, self.i - 1, None, None, None]

    def sym(self, r: float) -> Tensor:
        """Jitter in ``[-r, r] * jitter``."""
        return (2 * self() - 1) * (r * self.jitter)

    def rgb(self, lo: float, hi: float) -> Tensor:
        return torch.cat([self(lo, hi) for _ in range(3)], 1)

    def pick(self, palette: Tensor) -> Tensor:
        idx = (self() * len(palette)).long().clamp(max=len(palette) - 1).flatten()
        return palette[idx][..., None, None]


def _ellipse(x: Tensor, y: Tensor, cx, cy, rx, ry) -> Tensor:
    """Signed distance to an axis-aligned ellipse (negative inside), exact to first order at the edge.

    ``f / |grad f|`` with ``f = u^2 + v^2 - 1`` keeps edges equally sharp along both axes of thin shapes
    (lips, brows) and is fully inside at the centre (-inf). Far beyond the ends of the x axis it
    underestimates the distance, so the distance to the slab ``|x - cx| <= rx`` (a lower bound) takes over
    there; every elongated shape here lies along x. In-place ops: this is the renderer's hot loop, and
    fresh full-size buffers cost page faults.
    """
    u, v = (x - cx).div_(rx), (y - cy).div_(ry)
    f = (u * u).addcmul_(v, v).sub_(1)
    slab = u.abs().sub_(1).mul_(rx)
    u.div_(rx)
    v.div_(ry)
    return f.div_((u * u).addcmul_(v, v).sqrt_()).mul_(0.5).clamp_(min=slab)


def _circle(x: Tensor, y: Tensor, cx, cy, r) -> Tensor:
    """Signed distance to a circle."""
    dx, dy = x - cx, y - cy
    return (dx * dx).addcmul_(dy, dy).sqrt_().sub_(r)


class SyntheticFaces:
    """Procedural face identities; unbounded images per identity.

    Args:
        num_identities: identities ``0 .. num_identities-1`` exist (split them into train / held-out).
        seed: dataset seed; the same ``(seed, identity, image)`` always renders the same tensor.
        size: output height = width in pixels (geometry is resolution independent).
        occluder_prob: probability that an image carries an occluder (sunglasses, hand, mask, patch).
        jitter: scale of the per-image variation; 0 renders each identity's canonical image.
    """

    def __init__(self, num_identities: int, seed: int = 0, size: int = 112, occluder_prob: float = 0.0,
                 jitter: float = 1.0) -> None:
        if num_identities < 1 or size < 8 or not 0.0 <= occluder_prob <= 1.0 or jitter < 0:
            raise DataFormatError(
                f"SyntheticFaces(num_identities={num_identities}, size={size}, occluder_prob={occluder_prob}, "
                f"jitter={jitter}): need num_identities >= 1, size >= 8, occluder_prob in [0, 1], jitter >= 0")
        self.num_identities, self.seed, self.size = num_identities, seed, size
        self.occluder_prob, self.jitter = occluder_prob, jitter
        lin = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        # Pixel centres in (0, 1) as a row (1,1,1,W) and a column (1,1,H,1): affine maps of them cost
        # one full-size op per coordinate map.
        self._gx, self._gy = lin.view(1, 1, 1, -1), lin.view(1, 1, -1, 1)

    def render(self, identity: int, image: int) -> tuple[Tensor, Tensor]:
        """Image ``(3, size, size)`` float32 in [0, 1] and occluder mask ``(size, size)`` bool."""
        imgs, masks = self.render_batch(torch.tensor([identity]), torch.tensor([image]))
        return imgs[0], masks[0]

    def render_batch(self, identities: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
        """Render ``identities (B,)`` x ``images (B,)`` (int) to ``(B, 3, H, W)`` in [0, 1] and masks ``(B, H, W)``.

        The mask is True exactly where an occluder replaced the face pixels. Each image depends only on its
        own ``(seed, identity, image)``, never on the rest of the batch.
        """
        ids, nums = torch.as_tensor(identities).flatten().tolist(), torch.as_tensor(images).flatten().tolist()
        if len(ids) != len(nums) or not ids:
            raise DataFormatError(f"need equally many identities and images (>= 1), got {len(ids)} and {len(nums)}")
        bad = [k for k in ids if not 0 <= k < self.num_identities] + [j for j in nums if j < 0]
        if bad:
            raise DataFormatError(f"identity/image index {bad[0]} out of range: identities are "
                                  f"[0, {self.num_identities}), images are >= 0")
        gens = [_rng(1, self.seed, k, j) for k, j in zip(ids, nums)]
        ident = _Draws(torch.stack([torch.rand(_N_UNIFORMS, generator=_rng(0, self.seed, k)) for k in ids]))
        shot = _Draws(torch.stack([torch.rand(_N_UNIFORMS, generator=g) for g in gens]), self.jitter)
        noise = torch.stack([torch.randn(3, self.size, self.size, generator=g) for g in gens])
        img, frame = self._face(ident, shot)
        self._lighting(img, shot)
        sigma, has = shot(0.004, 0.035) * self.jitter, (shot() < self.occluder_prob).flatten()
        # Occluder draws always happen (last), so occluder_prob changes only the occluded pixels.
        mask = torch.zeros(len(ids), 1, self.size, self.size, dtype=torch.bool)
        if has.any():
            sub = {k: v[has] for k, v in frame.items()}
            occ, colour = self._occluder(_Draws(shot.u[has, shot.i:]), sub)
            img[has] = torch.where(occ, colour, img[has])
            mask[has] = occ
        return img.addcmul_(noise, sigma).clamp_(0, 1), mask[:, 0]

    def occlude(self, img: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """Paste a random occluder (chosen by ``seed``) into ``img (3, H, W)`` in [0, 1], at template positions.

        Returns the occluded copy ``(3, H, W)`` and its mask ``(H, W)`` bool (True = replaced pixel).
        """
        if not (isinstance(img, Tensor) and img.dim() == 3 and img.shape[0] == 3 and img.is_floating_point()):
            raise DataFormatError(f"occlude expects a float image (3, H, W), got "
                                  f"{tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__}")
        h, w = img.shape[1:]
        x = ((torch.arange(w) + 0.5) / w - 0.5).view(1, 1, 1, w).expand(1, 1, h, w)
        y = ((torch.arange(h) + 0.5) / h).view(1, 1, h, 1).expand(1, 1, h, w)
        t = lambda v: torch.tensor(v / 112).view(1, 1, 1, 1)  # noqa: E731 (template landmark as a parameter)
        frame = {"X": x, "Y": y, "Xi": x, "ey": t(51.6), "ny": t(71.74), "my": t(92.3), "rx": t(40.0)}
        occ, colour = self._occluder(_Draws(torch.rand(1, _N_UNIFORMS, generator=_rng(2, seed))), frame)
        return torch.where(occ[0], colour[0].to(img.dtype), img), occ[0, 0]

    def verification_pairs(self, identities: range | list[int], num_pairs: int, seed: int = 0,
                           ) -> list[tuple[int, int, int, int, bool]]:
        """``num_pairs`` (even) pairs ``(id_a, img_a, id_b, img_b, genuine)`` over ``identities``, half genuine.

        Genuine pairs use two different images of one identity; impostor pairs two different identities.
        Image indices are drawn from ``[0, 2**20)``; the order of genuine/impostor pairs is shuffled.
        """
        ids = sorted(set(identities))
        if len(ids) < 2 or num_pairs < 2 or num_pairs % 2:
            raise VerificationSetError(f"verification_pairs needs >= 2 distinct identities and an even num_pairs "
                                       f">= 2, got {len(ids)} identities and num_pairs={num_pairs}")
        if ids[0] < 0 or ids[-1] >= self.num_identities:
            raise DataFormatError(f"identities must lie in [0, {self.num_identities}), got {ids[0]}..{ids[-1]}")
        g, n_img = _rng(3, seed), 1 << 20
        r = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
        genuine = torch.randperm(num_pairs, generator=g) < num_pairs // 2
        pairs = []
        for gen in genuine.tolist():
            ia, ja = r(len(ids)), r(n_img)
            # An offset in [1, n) guarantees a different image / identity without rejection sampling.
            ib = ia if gen else (ia + 1 + r(len(ids) - 1)) % len(ids)
            jb = (ja + 1 + r(n_img - 1)) % n_img
            pairs.append((ids[ia], ja, ids[ib], jb, gen))
        return pairs

    def _face(self, p: _Draws, q: _Draws) -> tuple[Tensor, dict[str, Tensor]]:
        """Face of identity draws ``p`` under image draws ``q``: image ``(B, 3, H, W)`` and its face frame.

        The frame holds the coordinate maps (X, Y outline frame; Xi inner-feature frame, both with x centred
        on the face) and landmarks the occluders anchor to.
        """
        # Pose: image -> face frame is the inverse similarity (rotation about the centre, scale, shift),
        # built from 1-D row/column maps so each full coordinate map costs one add.
        rot, scale = q.sym(math.radians(8)), 1 + q.sym(0.06)
        dx, dy = self._gx - 0.5 - q.sym(4 / 112), self._gy - 0.5 - q.sym(4 / 112)
        cos, sin = torch.cos(rot) / scale, torch.sin(rot) / scale
        cx = 0.5 + p(-0.01, 0.01)
        # Yaw: inner features slide sideways and narrow while the outline stays put.
        yaw = q.sym(1.0)
        squash = 1 - 0.08 * yaw.abs()
        X = (cos * dx + 0.5 - cx) + sin * dy
        Xi = (cos * dx + 0.5 - cx - 0.03 * yaw) / squash + sin * dy / squash
        Y = (0.5 - sin * dx) + cos * dy
        Xs = Xi.abs()  # bilateral features (eyes, brows, ears, glasses) are drawn once, mirrored
        k = -1 / (1 + q.sym(0.6).abs() * 3) / (0.35 / self.size)  # sigmoid edge; wider edges = defocus blur
        a = lambda d: (d * k).sigmoid_()  # noqa: E731 (coverage of a signed distance)

        # Identity geometry around the ArcFace landmarks.
        cy, rx, ry, jaw = p(0.52, 0.58), p(0.31, 0.40), p(0.43, 0.50), p(0.0, 0.45)
        ey, ex, erx, ery = p(0.44, 0.48), p(0.14, 0.175), p(0.045, 0.065), p(0.017, 0.03)
        ny, nl, nw = p(0.61, 0.67), p(0.09, 0.17), p(0.03, 0.06)
        my, mw, lip = p(0.79, 0.85), p(0.10, 0.155), p(0.010, 0.026)
        skin = torch.lerp(_DARK_SKIN, _LIGHT_SKIN, p()) + p.rgb(-0.04, 0.04)
        hair_col = p.pick(_HAIR) * p(0.8, 1.2)
        # Background: the identity's preferred colour, mostly replaced per image so it is no identity cue.
        bg = torch.lerp(p.rgb(0.05, 0.95), q.rgb(0.0, 1.0), (q.jitter * q(0.4, 1.0)).clamp(max=1))
        img = (bg * (1 + q.sym(0.3) * dy)).expand(-1, 3, self.size, self.size).contiguous()

        # Hair behind the head (long styles), neck, ears, then the face itself.
        style, hv, hlen = p(), p(0.01, 0.07), p(0.95, 1.3)
        cap_d = _ellipse(X, Y, 0, cy - 0.03, rx + hv, ry + 0.6 * hv + 0.02)
        back = _ellipse(X, Y, 0, cy - 0.05, rx + hv + 0.02, hlen - cy + 0.05).clamp_(max=cap_d)
        img.lerp_(hair_col, a(back).mul_(style > 0.6))
        Xa = X.abs()
        img.lerp_(skin * 0.8, a((Xa - rx * p(0.4, 0.55)).clamp_(min=cy - Y)))
        img.lerp_(skin * 0.9, a(_ellipse(Xa, Y, rx * 0.97, ey + 0.05, p(0.035, 0.055), p(0.06, 0.09))))
        # The jaw narrows the lower half only: the x radius shrinks with depth below the centre line.
        below = ((Y - cy) / ry).clamp_(0, 1)
        face = a(_ellipse(X, Y, 0, cy, (below * below).mul_(-jaw).add_(1).mul_(rx), ry))
        img.lerp_(skin, face)

        # Beard (full: from the sideburns down; moustache: between nose and mouth).
        beard, dense = p(), p(0.6, 0.95)
        full = a((X * X).mul_(-0.3 / (rx * rx)).add_(ny + 0.025).sub_(Y)).mul_(face).mul_(beard < 0.2)
        stache = a((Xs - mw * 1.15).clamp_(min=ny + 0.02 - Y).clamp_(min=Y - my + lip))
        stache.mul_((beard >= 0.2) & (beard < 0.35))
        img.lerp_(hair_col * 0.85, full.clamp_(min=stache).mul_(dense))

        # Hair on top: inside a cap ellipse and above a curved, parted, wavy hairline; faint strands.
        top, curve, part, wave = p(0.15, 0.30), p(0.0, 0.35), p(-0.08, 0.08), p(0.0, 0.015)
        t = (X - part).div_(rx)
        hairline = (X * p(20, 60)).add_(p(0, 6.3)).sin_().mul_(wave).add_(top).addcmul_(t.square_(), curve)
        strands = hair_col * (X * p(60, 120)).addcmul_(Y, p(5, 30)).sin_().mul_(0.06).add_(1)
        img.lerp_(strands, a(cap_d).mul_(a(hairline.neg_().add_(Y))).mul_(style > 0.08))

        # Nose: shaded tip, side lines along the bridge, nostrils.
        img.lerp_(skin * 0.82, a(_ellipse(Xi, Y, 0, ny, nw * 0.9, nw * 0.55)).mul_(0.5))
        along = ((Y - ny + nl) / nl).clamp_(0, 1)
        side = (along.mul_(-0.6 * nw).add_(Xs).sub_(0.25 * nw)).abs_().sub_(0.004)
        img.lerp_(skin * 0.7, a(side.clamp_(min=(Y - ny + nl / 2).abs_().sub_(nl / 2))).mul_(0.45))
        img.lerp_(skin * 0.4, a(_ellipse(Xs, Y, nw * 0.55, ny + nw * 0.3, nw * 0.28, nw * 0.16)))

        # Mouth: lips around a bent centre line; smile lifts the corners, opening shows the dark inside.
        smile = p(-0.3, 0.6) + q.sym(0.8)
        opening = (p(-0.01, 0.01) + q.sym(0.03)).clamp(min=0)
        lip_col = torch.lerp(skin, _rgb(.72, .22, .25), p(0.3, 0.75))
        Ym = (Xi * Xi).mul_(smile * 0.4 / mw).sub_(my + 0.12 * smile * mw).add_(Y)  # Y minus the bent centre line
        img.lerp_(lip_col, a(_ellipse(Xi, Ym, 0, 0, mw, lip + opening / 2)))
        img.lerp_(lip_col * 0.3, a(_ellipse(Xi, Ym, 0, 0, mw * 0.9, opening / 2 + 0.003)))

        # Eyes: sclera, iris and pupil clipped to it, lid outline. Shifting x before mirroring moves both
        # irises the same way (gaze).
        ery = ery * (1 + q.sym(0.4)).clamp(0.2, 1.3)
        iris_col, iris_r = p.pick(_IRIS) * p(0.7, 1.2), erx * p(0.45, 0.62)
        sclera_d = _ellipse(Xs, Y, ex, ey, erx, ery)
        sclera = a(sclera_d)
        img.lerp_(_rgb(.95, .95, .93), sclera)
        iris_d = _circle((Xi - q.sym(0.3) * erx).abs_(), Y, ex, ey, 0)
        img.lerp_(iris_col, a(iris_d - iris_r).mul_(sclera))
        img.lerp_(iris_col * 0.1, a(iris_d.sub_(iris_r * 0.45)).mul_(sclera))
        img.lerp_(skin * 0.25, a(sclera_d.abs_().sub_(0.003).sub_(0.004 * (Y < ey))))

        # Eyebrows: rotated, arched ellipses; raise is per image, angle/thickness per identity.
        ang, blen, bth, arch = p(-0.3, 0.35), p(0.05, 0.085), p(0.007, 0.02), p(0.0, 0.5)
        s, t = Xs - (ex + p(-0.01, 0.02)), Y - (ey - p(0.05, 0.08) - q.sym(0.012))
        s, t = s * torch.cos(ang) - t * torch.sin(ang), (s * torch.sin(ang)).addcmul_(t, torch.cos(ang))
        brow = a(_ellipse(s, t.addcmul_(s, s * (arch / blen)), 0, 0, blen, bth))
        img.lerp_(torch.lerp(hair_col, torch.zeros_like(hair_col), p(0.0, 0.5)), brow)

        # Moles (0-2, fixed positions) and glasses: rings, plus a bar at bridge height outside the lenses
        # that forms the bridge and the temple arms.
        for _ in range(2):
            mole = a(_circle(Xi, Y, p(-0.25, 0.25), p(0.5, 0.88), p(0.005, 0.011)))
            img.lerp_(_rgb(.28, .16, .1), mole.mul_(p() < 0.3))
        gx_r, th, frame_col, wear = p(0.075, 0.095), p(0.004, 0.01), p.pick(_FRAME), p() < 0.25
        lens = _ellipse(Xs, Y, ex, ey, gx_r, gx_r * p(0.6, 0.95))
        bar = (Y - ey + 0.01).abs_().sub_(th).clamp_(min=Xs - rx * 0.98).clamp_(min=-lens)
        img.lerp_(frame_col, a(lens.abs_().sub_(th).clamp_(max=bar)).mul_(wear))
        return img, {"X": X, "Y": Y, "Xi": Xi, "ey": ey, "ny": ny, "my": my, "rx": rx}

    def _lighting(self, img: Tensor, q: _Draws) -> None:
        """In place: per-image contrast, brightness, colour cast, coloured haze and a directional shading gradient."""
        contrast = 1 + q.sym(0.35)
        gain = (1 + q.sym(0.35)) * (1 + torch.cat([q.sym(0.15) for _ in range(3)], 1))
        shade = (1 + q.sym(0.7) * (self._gx - 0.5)) + q.sym(0.4) * (self._gy - 0.5)
        haze = torch.cat([q.sym(0.08) for _ in range(3)], 1)  # coloured flare / black level
        img.mul_(contrast * gain).add_(0.5 * (1 - contrast) * gain + haze).mul_(shade)

    @staticmethod
    def _occluder(p: _Draws, frame: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Occluder shape ``(B, 1, H, W)`` bool (hard edges: the mask is exact) and colour ``(B, 3, H, W)``.

        Kinds: sunglasses bar over the eyes, hand-like blob, medical mask over mouth and nose, textured patch.
        """
        X, Y, Xi, ey, ny, my, rx = (frame[k] for k in ("X", "Y", "Xi", "ey", "ny", "my", "rx"))
        kind = (p() * 4).floor()
        bar = torch.maximum((Y - ey).abs() - p(0.035, 0.06), Xi.abs() - p(0.25, 0.36))
        bx, by = p(-0.25, 0.25), p(0.35, 0.85)
        blob = torch.stack([_ellipse(X, Y, bx + p(-0.08, 0.08), by + p(-0.08, 0.08), p(0.06, 0.13), p(0.06, 0.13))
                            for _ in range(3)]).amin(0)
        mask = torch.maximum(_ellipse(Xi, Y, 0, my - 0.01, rx * 0.95, p(0.17, 0.22)), ny - 0.02 - Y)
        patch = torch.maximum((X - p(-0.3, 0.3)).abs() - p(0.08, 0.18), (Y - p(0.2, 0.8)).abs() - p(0.08, 0.18))
        d = torch.where(kind == 0, bar, torch.where(kind == 1, blob, torch.where(kind == 2, mask, patch)))
        hand = torch.lerp(_DARK_SKIN, _LIGHT_SKIN, p())
        base = torch.stack([p.rgb(0.0, 0.15), hand, p.pick(_MASK), p.rgb(0.0, 1.0)])  # (4, B, 3, 1, 1)
        colour = base.gather(0, kind.long().view(1, -1, 1, 1, 1).expand(1, -1, 3, 1, 1))[0]
        # Stripes / checks make patches look like textured objects; other kinds get a faint fold texture.
        f = p(20, 80)
        checks = torch.where(p() < 0.5, torch.sin(f * Y + p(0, 6.3)), torch.ones_like(Y))
        tex = (torch.sin(f * X + p(0, 6.3)) * checks > 0).float()
        colour = colour + (p.rgb(0.0, 1.0) - colour) * (torch.where(kind == 3, 1.0, 0.08) * tex)
        return d < 0, colour.clamp(0, 1)
