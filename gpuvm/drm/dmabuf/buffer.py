"""``struct dma_buf`` (:class:`DmaBuf`): its file references and release
(``dma_buf_release``), attach/detach (``dma_buf_dynamic_attach``, ``dma_buf_detach``),
``dma_buf_map_attachment`` / ``dma_buf_unmap_attachment``, ``dma_buf_pin`` /
``dma_buf_unpin``, exporter-side moves (``ttm_bo_validate`` with the exporter's move
callback calling ``dma_buf_move_notify``), and the access query ``can_access_optimal``.
One class, one object: every method validates before it changes anything, so a refused
call leaves the dma-buf unchanged.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import attrs

from gpuvm.core.errors import (
    BackingConflict,
    Busy,
    InvalidValue,
    NotPinned,
    NotSupported,
    UseAfterFree,
    WouldMigrate,
)
from gpuvm.core.events import EventBus, Freed
from gpuvm.core.gem import GemObject, Resv
from gpuvm.core.refs import Holder, RefCount
from gpuvm.drm.caps import (
    DEFAULT_MAX_PHYS,
    BackingChoice,
    DeviceCaps,
    ExporterRules,
    ImportPaths,
    Unsat,
    choose_backing,
    reachable,
)
from gpuvm.drm.dmabuf.attachment import (
    AccessAnswer,
    Attachment,
    AttachmentMapped,
    AttachmentUnmapped,
    AttachView,
    Exporter,
    ImporterOps,
    MoveNotified,
)
from gpuvm.drm.placement import (
    PAGE_SIZE,
    Backing,
    Domain,
    MemoryManager,
    Place,
    PlaceFlags,
    Resource,
)

__all__ = ["DmaBuf", "dma_buf_holder"]

_ids = itertools.count(1)


def dma_buf_holder(obj: GemObject) -> Holder:
    """The holder of edges 3 and 5: a buffer's ``obj->dma_buf`` pointer."""
    return Holder("obj.dma_buf", who=obj)


_Plan = tuple[Literal["none", "validate", "pin"], tuple[Place, ...]]


def _max_phys(res: Resource, ram_top: int = DEFAULT_MAX_PHYS) -> int:
    return res.lpfn * PAGE_SIZE - 1 if res.lpfn else ram_top


@attrs.define(slots=True, eq=False, repr=False)
class DmaBuf:
    """``struct dma_buf`` exported by ``exporter`` around its buffer ``priv``.

    ``refs`` counts the file references (``file_count``) with their holders; at zero the
    dma-buf is released: the release hooks run (the exporter drops edge 2 there) and a
    ``Freed`` event is emitted.  Attachments must be gone by then.  ``sharing`` is the
    exporter's placement side (None: a dma-buf without placement, attach/map only count).
    """

    priv: GemObject
    exporter: object
    size: int
    resv: Resv
    bus: EventBus = attrs.field(factory=EventBus)
    name: str = ""
    id: int = attrs.field(factory=lambda: next(_ids))
    sharing: Exporter | None = attrs.field(default=None, kw_only=True)
    refs: RefCount = attrs.field(init=False)
    attachments: list[Attachment] = attrs.field(init=False, factory=list)
    released: bool = attrs.field(init=False, default=False)
    release_hooks: list[Callable[[DmaBuf], None]] = attrs.field(init=False, factory=list)
    attach_hooks: list[Callable[[Attachment], None]] = attrs.field(init=False, factory=list)
    detach_hooks: list[Callable[[Attachment], None]] = attrs.field(init=False, factory=list)
    moves: int = attrs.field(init=False, default=0)
    """Backing changes seen by the exporter's move callback."""
    violations: list[str] = attrs.field(init=False, factory=list)
    """Invariant breaches seen at move time (a pinned move, a static mapping moved)."""

    def __attrs_post_init__(self) -> None:
        if not self.name:
            self.name = f"dmabuf{self.id}"
        self.refs = RefCount(self, on_zero=self._release)
        if self.sharing is not None:
            self._mem.backing(self.priv)  # NotManaged if the buffer has no placement
            self._mem.on_move.append(self._on_move)

    def __repr__(self) -> str:
        return f"DmaBuf {self.name}" + (" (released)" if self.released else "")

    @property
    def file_count(self) -> int:
        return self.refs.total

    def keepers(self) -> Iterable[object]:
        return list(self.refs.holders)

    def check_alive(self, what: str = "access") -> None:
        if self.released:
            raise UseAfterFree(f"{what} on released {self!r}")

    def get(self, holder: object) -> DmaBuf:
        """``get_dma_buf`` on behalf of ``holder``."""
        self.check_alive("get")
        self.refs.acquire(holder, self.bus)
        return self

    def put(self, holder: object) -> None:
        """``dma_buf_put``; releases the dma-buf at zero."""
        self.check_alive("put")
        self.refs.release(holder, self.bus)

    def _release(self) -> None:
        if self.attachments:
            raise AssertionError(f"{self!r} released with attachments {self.attachments}")
        self.released = True
        if self.sharing is not None and self._on_move in self._mem.on_move:
            self._mem.on_move.remove(self._on_move)
        for hook in list(self.release_hooks):
            hook(self)
        self.bus.emit(Freed(self))

    # --- llseek -------------------------------------------------------------------------

    def llseek(self, offset: int, whence: int) -> int:
        """``dma_buf_llseek``: the size query userspace makes with ``lseek(fd, 0,
        SEEK_END)`` (returns the size; ``SEEK_SET`` returns 0).  Any other ``whence`` or a
        non-zero ``offset`` is ``-EINVAL``.  Nothing changes (the model keeps no file
        position)."""
        self.check_alive("llseek")
        if whence not in (os.SEEK_SET, os.SEEK_END):
            raise InvalidValue(f"dma_buf_llseek of {self!r}: whence {whence}")
        if offset != 0:
            raise InvalidValue(f"dma_buf_llseek of {self!r}: offset {offset} (only 0)")
        return self.size if whence == os.SEEK_END else 0

    # --- placement helpers ---------------------------------------------------------------

    @property
    def _mem(self) -> MemoryManager:
        assert self.sharing is not None
        return self.sharing.mem

    @property
    def _rules(self) -> ExporterRules:
        assert self.sharing is not None
        return self.sharing.rules

    @property
    def backing(self) -> Backing:
        """The exporter buffer's placement state (``-EINVAL`` without placement)."""
        if self.sharing is None:
            raise InvalidValue(f"{self!r} has no placement")
        return self._mem.backing(self.priv)

    def _views(self, extra: AttachView | None = None) -> list[AttachView]:
        out = [v for a in self.attachments if (v := a.view) is not None]
        if extra is not None:
            out.append(extra)
        return out

    def _pref(self, first: Domain | None = None) -> list[Domain]:
        """The exporter's domain preference: VRAM (if allowed) first, then its non-p2p
        map domain, then the rest of the allowed list."""
        b = self.backing
        allowed = [p.domain for p in (*b.preferred, *b.allowed)]
        order: list[Domain] = []
        for d in (first, Domain.VRAM, self._rules.map_non_p2p, *allowed):
            if d is not None and d in allowed and d not in order:
                order.append(d)
        return order

    def reaches(self, view: AttachView, res: Resource | None = None) -> bool:
        """Whether ``view`` can DMA to ``res`` (default: the current backing)."""
        if res is None:
            res = self.backing.resource
        if res is None:
            return False
        assert self.sharing is not None
        contig = res.contiguous or self._rules.contiguous_backing
        top = _max_phys(res, self.sharing.ram_top)
        return reachable(view.caps, res.domain, view.peer2peer, max_phys=top, contiguous=contig)

    def _solve(self, views: Sequence[AttachView], pref: Sequence[Domain]) -> Place:
        assert self.sharing is not None
        choice: BackingChoice | Unsat = choose_backing(
            views, pref, size=self.size, ram_top=self.sharing.ram_top
        )
        if isinstance(choice, Unsat):
            raise BackingConflict(f"{self!r}: no backing suits every attachment: {choice.reason}")
        place = choice.place
        if self._rules.contiguous_backing and not choice.contiguous:
            place = Place(place.domain, place.flags | PlaceFlags.CONTIGUOUS, place.lpfn)
        return place

    def _pin_on_map(self, view: AttachView) -> bool:
        sharing = self.sharing
        assert sharing is not None
        return sharing.rules.dynamic and (not view.dynamic or not sharing.move_notify_built)

    def _immovable(self) -> str | None:
        b = self.backing
        if b.pinned:
            return f"pinned x{b.pin_count} in {b.resource}"
        static = [a for a in self.attachments if not a.dynamic and a.mappings]
        if static:
            return f"statically mapped by {static[0]!r}"
        return None

    def _plan_map(self, view: AttachView, views: Sequence[AttachView]) -> _Plan:
        """How mapping for ``view`` would change the backing: nothing, a validate to a
        place, or a pin at a place (``pin_on_map``).  Raises what the map would."""
        b = self.backing
        res = b.resource
        if res is not None and not self._mappable(res):
            res = None  # treated like no backing: the map places it
        pin = self._pin_on_map(view)
        if pin:  # dma_buf_map_attachment calls the exporter's own pin op
            where: tuple[Place, ...] = self._pin_place(views)
            stays = res is not None and res.domain == where[0].domain
            fits = stays and res is not None and all(self.reaches(v, res) for v in views)
            why = None if fits else self._immovable()
            if why is not None and b.resource is not None:
                raise BackingConflict(f"{self!r} {why}: out of reach of {view.caps.name}")
            self._mem.plan_pin(self.priv, where)
            return ("pin", where)
        if res is not None and self.reaches(view, res):
            return ("none", ())
        why = self._immovable()
        if why is not None and b.resource is not None:
            raise BackingConflict(f"{self!r} {why}: out of reach of {view.caps.name}")
        where = (self._solve(views, self._pref()),)
        self._mem.plan_validate(self.priv, where)
        return ("validate", where)

    def _mappable(self, res: Resource) -> bool:
        """Whether the exporter hands out DMA addresses for ``res`` as it is: SYSTEM pages
        only for exporters that map from SYSTEM (i915, GEM helpers); TTM drivers bind them
        into TT first (amdgpu's map validates to GTT)."""
        return res.domain != Domain.SYSTEM or self._rules.map_non_p2p == Domain.SYSTEM

    def _pin_place(self, views: Sequence[AttachView]) -> tuple[Place, ...]:
        """Where the exporter's ``pin`` op freezes the backing (``amdgpu_dma_buf_pin``,
        ``xe_dma_buf_pin``): ``pin_all_p2p`` only when every attachment is p2p AND
        ``CONFIG_DMABUF_MOVE_NOTIFY`` is built, else ``pin_otherwise`` (GTT / TT).  An
        exporter whose pin migrates to TT refuses a buffer without a system placement
        (``xe_bo_migrate``: ``-EINVAL``)."""
        rules = self._rules
        sharing = self.sharing
        vram_ok = sharing is not None and sharing.move_notify_built
        all_p2p = bool(views) and all(v.peer2peer for v in views)
        dom = rules.pin_all_p2p if all_p2p and vram_ok else rules.pin_otherwise
        if rules.pin_migrates_to_tt and dom == Domain.TT:
            b = self.backing
            doms = {p.domain for p in (*b.preferred, *b.allowed)}
            if not doms & {Domain.TT, Domain.SYSTEM}:
                raise InvalidValue(
                    f"{self!r}: {rules.flavour} pins in TT only and xe_bo_migrate cannot move "
                    f"a buffer placed only in {', '.join(sorted(d.name for d in doms))} there"
                )
        res = self.backing.resource
        if res is not None and res.domain == dom and all(self.reaches(v, res) for v in views):
            return (Place(dom),)
        return (self._solve(views, [dom]),)

    def _would_move(self, plans: Iterable[_Plan]) -> list[str]:
        out = []
        for kind, where in plans:
            if kind == "none":
                continue
            moves = (
                self._mem.plan_pin(self.priv, where)
                if kind == "pin"
                else self._mem.plan_validate(self.priv, where)
            )
            for m in moves:
                if m.src is not None and m.dst is not None:
                    who = "it" if m.obj is self.priv else repr(m.obj)
                    out.append(f"{who} {m.src.name}->{m.dst.name}")
        return out

    def can_access_optimal(
        self, caps: DeviceCaps, *, pcie_gbps: float = 24.0, dram_gbps: float = 60.0
    ) -> AccessAnswer:
        """Whether an importer with ``caps`` could access this buffer while the exporter
        keeps it in its optimal (first preferred) place, without attaching, pinning or
        moving anything (the alternative to NO_MOVE proposed in Oct 2024).  It does not
        say whether that access is fast; ``read_gbps`` gives the bandwidth [M]: p2p and a
        discrete importer reading system memory at ``pcie_gbps``, an integrated one at
        ``dram_gbps``."""
        self.check_alive("query")
        sharing = self.sharing
        b = self.backing
        best = b.preferred[0]
        opt = Resource.from_place(best)
        same = caps.name == sharing.caps.name if sharing is not None else False
        cur = b.resource
        if same:
            return AccessAnswer(True, caps.name, opt.domain, "self", None, True, "same device")
        if caps.import_mode(False) is None:
            return AccessAnswer(
                False, caps.name, opt.domain, None, None, False, "no foreign import path"
            )
        assert sharing is not None
        p2p = (
            ImportPaths.DYNAMIC in caps.import_paths and caps.allow_peer2peer and sharing.p2p(caps)
        )
        view = AttachView(caps, p2p, ImportPaths.DYNAMIC in caps.import_paths)
        ok = self.reaches(view, opt)
        current_ok = cur is not None and self.reaches(view, cur)
        if not ok:
            why = "no p2p path to VRAM" if opt.domain == Domain.VRAM else "out of DMA reach"
            return AccessAnswer(False, caps.name, opt.domain, None, None, current_ok, why)
        if opt.domain == Domain.VRAM:
            return AccessAnswer(
                True, caps.name, opt.domain, "p2p", pcie_gbps, current_ok, "p2p bus addresses"
            )
        bw = dram_gbps if caps.integrated else pcie_gbps
        return AccessAnswer(
            True, caps.name, opt.domain, "system", bw, current_ok, "DMA to system pages"
        )

    # --- attach / detach -----------------------------------------------------------------

    def attach(
        self,
        importer: object,
        caps: DeviceCaps | None = None,
        ops: ImporterOps | None = None,
        *,
        no_move: bool = False,
        map_now: bool = False,
    ) -> Attachment:
        """``dma_buf_dynamic_attach`` (``ops`` given) or ``dma_buf_attach`` (static).

        With placement and ``caps``: ``peer2peer`` is ``ops.allow_peer2peer`` cleared when
        the topology has no p2p path; xe/i915 refuse a non-p2p attach of a buffer that
        cannot live in system memory (``-EOPNOTSUPP``); i915 and GEM helpers migrate and
        pin at attach; a late attacher that cannot reach an immovable backing attaches
        (its first map fails ``-EBUSY``, unless ``map_now`` maps it here); ``no_move``
        (the NO_MOVE RFC) fails ``-EINVAL`` if the attach or its first map would migrate.
        ``map_now`` maps once right away (a static helper import).  All checks come
        first: a refused attach leaves nothing behind.
        """
        self.check_alive("attach")
        if ops is not None and ops.move_notify is None:
            raise InvalidValue(f"dynamic attach to {self!r} without move_notify")
        dynamic = ops is not None
        sharing = self.sharing
        if sharing is None or caps is None:
            if no_move and sharing is not None:
                raise WouldMigrate(f"NO_MOVE attach to {self!r} without importer caps")
            att = Attachment(self, importer, dynamic, caps=caps, ops=ops)
            for hook in self.attach_hooks:
                hook(att)
            self.attachments.append(att)
            if map_now:
                self.map(att)
            return att
        rules = sharing.rules
        p2p = dynamic and ops is not None and ops.allow_peer2peer and sharing.p2p(caps)
        view = AttachView(caps, p2p, dynamic)
        views = self._views(view)
        b = self.backing
        system_ok = any(p.domain in (Domain.TT, Domain.SYSTEM) for p in (*b.preferred, *b.allowed))
        if rules.refuses_non_system and not p2p and not system_ok:
            raise NotSupported(
                f"{rules.flavour} exporter: {caps.name} is not p2p and {self!r} cannot "
                "live in system memory"
            )
        # A late attacher out of reach of an immovable backing is not refused here:
        # amdgpu_dma_buf_attach / xe_dma_buf_attach only settle peer2peer (and xe's
        # migratability); the failure, if any, is -EBUSY at its first map.
        plans: list[_Plan] = []
        if rules.pins_at_attach:
            where = self._pin_place(views)
            self._mem.plan_pin(self.priv, where)
            plans.append(("pin", where))
        if (map_now or no_move) and not rules.pins_at_attach:
            # with an attach-time pin the map finds the backing frozen where it reaches
            plans.append(self._plan_map(view, views))
        if no_move:
            moved = self._would_move(plans)
            if moved:
                raise WouldMigrate(
                    f"NO_MOVE import of {self!r} on {caps.name} would migrate: {', '.join(moved)}"
                )
        att = Attachment(self, importer, dynamic, p2p, caps=caps, ops=ops)
        for hook in self.attach_hooks:
            hook(att)
        if rules.pins_at_attach:  # in the exporter's attach op, before the list insert
            self._mem.pin(self.priv, plans[0][1])
            att.attach_pins = 1
        self.attachments.append(att)
        if map_now:
            self.map(att)
        return att

    def detach(self, att: Attachment, *, teardown: bool = False) -> None:
        """``dma_buf_detach`` (undoing an attach-time pin).  With ``teardown`` (an
        imported buffer being freed) live mappings and pins are dropped first; otherwise
        they make the detach fail ``-EBUSY``."""
        if att.detached or att not in self.attachments:
            raise AssertionError(f"detach of {att!r}, which is not attached")
        if not teardown and (att.mappings or att.pins):
            raise Busy(f"detach of {att!r} with {att.mappings} mappings, {att.pins} pins")
        while att.mappings:
            self.unmap(att)
        while att.pins:
            self.unpin(att)
        for hook in self.detach_hooks:
            hook(att)
        if att.attach_pins and self.sharing is not None and not self.priv.freed:
            self._mem.unpin(self.priv)
        att.attach_pins = 0
        self.attachments.remove(att)
        att.detached = True

    def _check_att(self, att: Attachment, what: str) -> None:
        self.check_alive(what)
        if att.detached or att.dmabuf is not self or att not in self.attachments:
            raise InvalidValue(f"{what} of {att!r}, which is not attached to {self!r}")

    # --- map / unmap ---------------------------------------------------------------------

    def map(self, att: Attachment) -> Resource | None:
        """``dma_buf_map_attachment``: pin first if ``pin_on_map`` (static importer of a
        dynamic exporter, or MOVE_NOTIFY not built), else move the backing where this
        attachment reaches it (a p2p attachment maps VRAM in place; a first map places a
        not yet resident buffer from :func:`~gpuvm.drm.caps.choose_backing` over every
        attachment).  A move calls every dynamic importer's ``move_notify`` first.
        Returns the backing the new mapping points at."""
        self._check_att(att, "map")
        view = att.view
        if self.sharing is None or view is None:
            att.mappings += 1
            att.maps += 1
            return None
        kind, where = self._plan_map(view, self._views())
        if kind == "pin":
            self._mem.pin(self.priv, where)
            att.map_pins += 1
        elif kind == "validate":
            self._mem.validate(self.priv, where)
        res = self.backing.resource
        assert res is not None
        att.mappings += 1
        att.maps += 1
        att.mapped_resource = res
        att.stale = False
        att.unnotified = None
        if self.bus.route[AttachmentMapped]:
            self.bus.emit(AttachmentMapped(att, res.domain.name, self.size, att.peer2peer))
        return res

    def unmap(self, att: Attachment) -> None:
        """``dma_buf_unmap_attachment`` of one mapping (unpinning if the map pinned)."""
        self._check_att(att, "unmap")
        if att.mappings <= 0:
            raise InvalidValue(f"unmap of {att!r}, which has no mapping")
        stale = att.stale
        att.mappings -= 1
        att.unmaps += 1
        if att.map_pins > att.mappings:
            att.map_pins -= 1
            if self.sharing is not None:
                self._mem.unpin(self.priv)
        if att.mappings == 0:
            att.mapped_resource = None
            att.stale = False
            att.unnotified = None
        if self.bus.route[AttachmentUnmapped]:
            self.bus.emit(AttachmentUnmapped(att, self.size, stale))

    def remap(self, att: Attachment) -> Resource | None:
        """What an importer does after ``move_notify``: drop the stale mapping, map again
        (the exporter may move the backing back where this attachment reaches it)."""
        self._check_att(att, "remap")
        view = att.view
        if self.sharing is not None and view is not None and att.dynamic:
            self._plan_map(view, self._views())  # refuse before dropping the old mapping
        elif self.sharing is not None and view is not None and att.map_pins:
            # a pinned static mapping can only be re-made in place: a late attacher out of
            # reach would need a move its own pin forbids (refused before anything changes)
            res = self.backing.resource
            views = self._views()
            if res is None or not all(self.reaches(v, res) for v in views):
                raise BackingConflict(
                    f"remap of {att!r}: pinned backing {res} is out of reach of a later "
                    "attacher; unmap first"
                )
        if att.mappings:
            self.unmap(att)
        return self.map(att)

    # --- pin / unpin ---------------------------------------------------------------------

    def pin(self, att: Attachment) -> None:
        """``dma_buf_pin`` by a dynamic importer: freeze the backing where every current
        attachment reaches it (amdgpu: VRAM if all are p2p, else GTT).  ``-EINVAL`` for a
        static attachment or a buffer already pinned elsewhere.  An exporter without
        ``.pin`` (i915) is only counted: ``dma_buf_pin`` calls nothing."""
        self._check_att(att, "pin")
        if not att.dynamic:
            raise InvalidValue(f"dma_buf_pin by static {att!r}")
        if self.sharing is None or not self._rules.dynamic:
            att.pins += 1  # an exporter without .pin (i915): dma_buf_pin does nothing
            return
        where = self._pin_place(self._views())
        self._mem.pin(self.priv, where)
        att.pins += 1

    def unpin(self, att: Attachment) -> None:
        """``dma_buf_unpin``."""
        self._check_att(att, "unpin")
        if att.pins <= 0:
            raise NotPinned(f"dma_buf_unpin of {att!r}, which holds no pin")
        att.pins -= 1
        if self.sharing is not None and self._rules.dynamic:
            self._mem.unpin(self.priv)

    # --- exporter side -------------------------------------------------------------------

    def move(self, where: Sequence[Place] | Place | Domain) -> None:
        """The exporter validates its buffer to ``where`` (``ttm_bo_validate``): pinned
        buffers refuse (``-EINVAL``); a move calls ``move_notify`` on every dynamic
        attachment first."""
        self.check_alive("move")
        self._mem.validate(self.priv, where)

    def exporter_use(self) -> None:
        """The exporter's command submission uses the buffer (``amdgpu_cs_bo_validate``):
        toward ``preferred`` if it has no attachments or the exporter re-promotes while
        attached, else it validates against ``allowed`` (stays put).  Pinned: no-op."""
        self.check_alive("exporter_use")
        b = self.backing
        if b.pinned:
            return
        if not self.attachments or self._rules.repromote_while_attached:
            self._mem.validate(self.priv)
        else:
            self._mem.validate(self.priv, b.allowed)

    @property
    def exported(self) -> bool:
        """Whether the exporter's buffer still points at this dma-buf (``obj->dma_buf``).
        ``drm_gem_object_exported_dma_buf_free`` clears that pointer when the exporter's
        last GEM handle closes, and the TTM exporters (``amdgpu_bo_move_notify``,
        ``xe_bo_move_notify``) reach their importers only through it.  A buffer without
        that field (a bare :class:`~gpuvm.core.gem.GemObject`) counts as exported."""
        return getattr(self.priv, "dma_buf", self) is self

    def _on_move(self, b: Backing, old: Resource | None, new: Resource | None) -> None:
        """The exporter's move callback (``amdgpu_bo_move_notify`` /
        ``xe_bo_move_notify`` -> ``dma_buf_move_notify``): before the backing leaves a
        non-SYSTEM domain (any domain for xe), every dynamic importer's ``move_notify``
        runs.  Only exporters with ``pin``/``unpin`` call it (i915 never does), and only
        while ``obj->dma_buf`` still points here (:attr:`exported`): after the exporter's
        last handle closed, a dynamic importer's live mapping is left pointing at the old
        backing (:attr:`Attachment.unnotified`, reported by the lifetime checker)."""
        if b.obj is not self.priv or self.released:
            return
        self.moves += 1
        if b.pinned:
            self.violations.append(f"{self!r} moved while pinned: {old} -> {new}")
        if old is None:
            return
        rules = self._rules
        notify = rules.dynamic and (old.domain != Domain.SYSTEM or rules.notify_from_system)
        exported = self.exported
        for att in list(self.attachments):
            if att.dynamic and notify and not exported:
                if att.mappings and not att.stale and att.unnotified is None:
                    att.unnotified = att.mapped_resource
            elif att.dynamic and notify:
                att.notifies += 1
                if att.mappings:
                    att.stale = True
                if self.bus.route[MoveNotified]:
                    dst = new.domain.name if new is not None else "none"
                    self.bus.emit(MoveNotified(att, old.domain.name, dst))
                if att.ops is not None and att.ops.move_notify is not None:
                    att.ops.move_notify(att)
            elif att.mappings and not att.stale:
                self.violations.append(f"{att!r} mapped across a move without move_notify")

    def stale_mappings(self) -> list[Attachment]:
        """Attachments whose live mapping points at a backing the exporter moved without
        ``move_notify`` (see :meth:`_on_move`): the importer's DMA hits freed memory."""
        return [a for a in self.attachments if a.unnotified is not None and a.mappings]

    # --- state and invariants ------------------------------------------------------------

    def state(self) -> tuple[object, ...]:
        """A comparable value of the dma-buf and its attachments (for snapshots)."""
        return (
            repr(self),
            self.released,
            self.moves,
            tuple(self.violations),
            tuple(a.state() for a in self.attachments),
        )

    def check_invariants(self) -> None:
        """Nothing attached after release; attachments consistent;
        pinned backing never moved, and reached by every mapped attachment while a pin is
        held through the dma-buf (a late attacher, or a dynamic one under the exporter's
        own pin such as scanout, may be out of reach: its map fails ``-EBUSY``); static
        mappings of a dynamic exporter hold pins; no live (non-stale) mapping points at an
        old backing unless the kernel moved it unnotified (:meth:`stale_mappings`, a finding);
        non-p2p attachments map only system memory."""
        if self.released:
            if self.attachments or self.refs.total:
                raise AssertionError(f"{self!r}: released with attachments or references")
            return
        if self.refs.total <= 0:
            raise AssertionError(f"{self!r}: alive with no file reference")
        if self.violations:
            raise AssertionError(f"{self!r}: {self.violations[0]}")
        for a in self.attachments:
            if a.dmabuf is not self or a.detached:
                raise AssertionError(f"{a!r} listed on {self!r} but detached or foreign")
            if min(a.mappings, a.pins, a.map_pins, a.attach_pins) < 0:
                raise AssertionError(f"{a!r}: negative count")
            if a.map_pins > a.mappings:
                raise AssertionError(f"{a!r}: {a.map_pins} map pins > {a.mappings} mappings")
            if a.ops is not None and (not a.dynamic or a.ops.move_notify is None):
                raise AssertionError(f"{a!r}: importer ops without a dynamic move_notify")
            if not a.dynamic and (a.pins or a.peer2peer):
                raise AssertionError(f"{a!r}: static attachment pinned or p2p")
        if self.sharing is None:
            return
        if self._on_move not in self._mem.on_move:
            raise AssertionError(f"{self!r}: move callback not registered")
        b = self.backing
        importer_pins = self._rules.dynamic  # dma_buf_pin is a no-op without .pin
        held = sum(
            (a.pins if importer_pins else 0) + a.map_pins + a.attach_pins for a in self.attachments
        )
        if b.pin_count < held:
            raise AssertionError(f"{self!r}: pin_count {b.pin_count} < attachment pins {held}")
        res = b.resource
        for a in self.attachments:
            v = a.view
            if self._rules.dynamic and not a.dynamic and a.map_pins != a.mappings:
                raise AssertionError(f"{a!r}: static mappings {a.mappings} hold {a.map_pins} pins")
            if held and v is not None and a.mappings and not self.reaches(v, res):
                raise AssertionError(f"{a!r} maps but cannot reach pinned backing {res}")
            live = a.usable and a.unnotified is None
            if live and a.mapped_resource != res:
                raise AssertionError(
                    f"{a!r}: live mapping of {a.mapped_resource}, backing is {res} "
                    "(moved without move_notify)"
                )
            if live and not a.peer2peer and res is not None and res.domain == Domain.VRAM:
                raise AssertionError(f"{a!r}: non-p2p attachment mapped VRAM")
            if live and res is not None and not self._mappable(res):
                raise AssertionError(f"{a!r}: mapped {res} that {self._rules.flavour} never maps")
