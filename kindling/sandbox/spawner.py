"""The sandbox spawner: a small root process that makes isolated execution environments.

Kindling starts it once (``python -m kindling.sandbox.spawner FD``) and talks to
it over a SOCK_SEQPACKET socket: JSON messages, file descriptors alongside.
Forking this lean process costs far less than forking the server, and it keeps
a pool of *shells* ready (kindling.sandbox.shell): processes already in a fresh
cgroup and in their own namespaces, with their root assembled; a spawn only
binds the code in, pivots, drops privileges, loads seccomp and execs.

Templates (kindling.sandbox.template) are initialized runtimes that environments
are cloned from; this module runs the loop that answers Kindling, keeps a spare
clone of each template ready, checks it from outside (kindling.sandbox.verify)
before handing it out, and reaps what exits.

Each environment (shell, template, spare clone) gets its network from here when it is prepared, off the
cold-start path (kindling.network.plane: a veth on the server's bridge, the Runtime API's address); its
function's egress rules (a VPC function's, else null: the server's default) are applied before it runs.

Requests:  {"req": n, "op": "spawn", "argv", "env", "task_root", "memory_mb", "tmp_mb", "egress"} + [output fd]
           {"req": n, "op": "template", "template", ...as spawn} + [output fd of the template's init]
           {"req": n, "op": "clone", "template", "env", "tmp_mb", "egress"} + [output fd]
           {"req": n, "op": "drop", "template"}
Answers:   {"req": n, "ok": true, "pid", "cgroup"} + [Runtime API listener fd]  |  {"req": n, "ok": false, "error"}
Events:    {"exit": pid, "code": exit code or -signal}
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

import pyseccomp

from kindling.network.plane import Plane
from kindling.sandbox import layout, linux, seccomp, verify
from kindling.sandbox.cgroups import Cgroup
from kindling.sandbox.shell import MSG, RUNTIME_API, RUNTIME_DIR, TASK_ROOT, Config, Shell, _close
from kindling.sandbox.template import CLONE_NEWUSER, Spare, Template
from kindling.sandbox.tmp_storage import TmpStorage, attach_in
from kindling.sandbox.verify import REJECTED

__all__ = ["MSG", "RUNTIME_API", "RUNTIME_DIR", "TASK_ROOT", "Spawner", "main"]  # the constants: re-exported

QUIET = 0.05  # seconds without requests before preparing sandboxes ahead
# ... and before making a /tmp that is not needed yet (one of its size is still ready): made at once, it would
# compete for the CPU with the init of the environment that took the last one (a fresh interpreter's ~50 ms)
TMP_QUIET = 0.2
DROP_WAIT = 1.0  # seconds a zygote's clone has, after "go", to drop its privileges and pass the check
WAKE = 0.2  # seconds a frozen template is thawed for, to reap a clone that exited
POLL = 0.002  # how often a clone that said it dropped its privileges is looked at again until it passes
MAX_WAITERS = 1024
MAX_FAILURES = 5  # environments of one template that may exit during their set-up before it is dropped


def _sooner(wait: float | None, other: float) -> float:
    return max(0.0, other if wait is None else min(wait, other))


def _pid_one(pid: int) -> bool:
    """Whether ``pid`` is PID 1 of the innermost PID namespace it is in (NSpid's last field)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            nspid = next(line for line in f if line.startswith("NSpid:")).split()
    except (OSError, StopIteration):
        return False
    return len(nspid) > 2 and nspid[-1] == "1"


def _exit_code(pid: int) -> int | None:
    """The exit status of a process that has exited but is not reaped yet (/proc/PID/stat's exit_code)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] != b"Z" or len(fields) < 50:
        return None
    try:
        return os.waitstatus_to_exitcode(int(fields[49]))
    except ValueError:
        return None



class Spawner:
    def __init__(self, server: socket.socket, cfg: Config) -> None:
        self.server = server
        self.cfg = cfg
        self.filter = seccomp.build()
        self.template_filter = seccomp.build(template=True)
        # A template makes namespaces for its clones, never a user namespace: then a clone that dropped every
        # capability is as confined by the template's filter as by the strict one on top (see verify.py).
        self.template_filter.add_rule(pyseccomp.ERRNO(errno.EPERM), "unshare",
                                      pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        self.strict_bpf = seccomp.bpf(self.filter).hex()
        self.pool: list[Shell] = []
        self.templates: dict[str, Template] = {}
        self.retired: dict[str, Template] = {}  # dropped, frozen until their last clone exits
        self.rejected: dict[str, str] = {}  # template → why it was killed (asked for by the clones Kindling wants)
        self.runtimes: dict[int, Cgroup] = {}
        self.taken: dict[int, set[str]] = {}  # a live clone's host PID → its namespaces
        self.pidfds: dict[int, int] = {}  # a clone's host PID → a pidfd that says when it exits
        self.unreported: dict[int, float] = {}  # exited clones whose status their template has yet to say
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        cfg.lang_mounts = layout.mount_langs(cfg.langs, os.path.join(os.path.dirname(cfg.mount_point), "sandbox-lang"))
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel = selectors.DefaultSelector()
        self.last_request = 0.0
        self.leftover: list[Cgroup] = []  # groups to remove once what was in them is reaped
        try:
            self.plane = Plane(cfg.instance, cfg.network, cfg.exposed)
        except Exception as exc:  # noqa: BLE001 - environments still run, with loopback only
            print(f"kindling spawner: could not set up the network plane ({exc}); execution environments get "
                  "loopback only (network=none)", file=sys.stderr)
            self.plane = Plane(cfg.instance, "none", {})
        self.tmp = TmpStorage(Path(cfg.tmp_dir), cfg.uid, cfg.gid, depth=max(1, cfg.pool))
        if not self.tmp.available:
            print(f"kindling spawner: execution environments' /tmp is a tmpfs charged to their memory "
                  f"({self.tmp.why}); it is on disk where Kindling runs as root with loop devices and mkfs.ext4",
                  file=sys.stderr)

    def take_tmp(self, size_mb: int, inherited: bool = False) -> int:
        """An environment's /tmp (a detached mount to hand over, then release), or -1: a tmpfs."""
        try:
            return self.tmp.take(size_mb, inherited)
        except OSError as exc:
            print(f"kindling spawner: could not make a /tmp on disk ({exc}); this environment's is a tmpfs",
                  file=sys.stderr)
            return -1

    def answer(self, req: int, doc: dict, fds: list[int] | None = None) -> None:
        self.notify({"req": req, **doc}, fds)

    def notify(self, doc: dict, fds: list[int] | None = None) -> None:
        try:
            socket.send_fds(self.server, [json.dumps(doc).encode()], fds or [])
        except OSError:  # Kindling has gone: so does everything it ran
            self.shutdown()
            raise SystemExit(0) from None

    def short(self) -> list[Template | TmpStorage | None]:
        """What to prepare ahead: a template lacking its spare clone, a /tmp of a size none is left of, or
        None for a shell. (Another /tmp of a size some are left of waits for a longer pause: ``fill``.)"""
        out: list[Template | TmpStorage | None] = [t for t in self.templates.values() if t.ready and t.spare is None]
        if self.tmp.short(urgent=True) is not None:
            out.append(self.tmp)
        return out + [None] * (self.cfg.pool - len(self.pool))

    def fill(self) -> None:
        """Prepare one thing ahead (one at a time, so requests never wait long), once requests have
        paused: preparing competes for the CPU with the environment that was just started."""
        short, quiet = self.short(), time.monotonic() - self.last_request
        if not short and quiet >= TMP_QUIET and self.tmp.short() is not None:
            short = [self.tmp]
        if not short or quiet < QUIET:
            return
        if isinstance(short[0], Template):
            self.begin_spare(short[0])
            return
        if short[0] is not None:
            try:
                self.tmp.fill()
            except OSError as exc:
                print(f"kindling spawner: could not make a /tmp on disk: {exc}; environments get a tmpfs",
                      file=sys.stderr)
                self.tmp.available = False
            return
        try:
            self.pool.append(self.shell())
        except Exception as exc:
            print(f"kindling spawner: could not prepare a sandbox: {exc!r}", file=sys.stderr)

    def shell(self) -> Shell:
        shell = Shell(self.cfg, self.filter)
        try:
            self.plane.attach(shell.pid)  # its interface: off the cold-start path when the pool has shells
        except BaseException:
            shell.discard()
            self.leftover.append(shell.cgroup)  # removed once the shell is reaped
            raise
        return shell

    def spawn(self, spec: dict, out_fd: int) -> None:
        layout.check(spec, self.cfg.langs, self.cfg.system_roots)  # before a shell is used up
        shell = self.pool.pop(0) if self.pool else self.shell()
        try:
            self.plane.restrict(shell.pid, spec.get("egress"))
        except BaseException:
            shell.discard()
            self.leftover.append(shell.cgroup)
            raise
        tmp_fd = self.take_tmp(spec["tmp_mb"])
        try:
            shell.go(spec, out_fd, tmp_fd)
        finally:
            self.tmp.release(tmp_fd)
        self.runtimes[shell.pid] = shell.cgroup
        self.answer(spec["req"], {"ok": True, "pid": shell.pid, "cgroup": shell.id}, [shell.listener])
        os.close(shell.listener)

    # -- templates: everything they say is checked, nothing they do is waited on ---------------------------
    def template(self, spec: dict, out_fd: int) -> None:
        try:
            layout.check(spec, self.cfg.langs, self.cfg.system_roots)
        except layout.LayoutError:
            os.close(out_fd)
            raise
        old = self.templates.pop(spec["template"], None)
        if old is not None:
            self.drop_template(old)
        def network(pid: int) -> None:
            self.plane.attach(pid)
            self.plane.restrict(pid, spec.get("egress"))
        tmp_fd = -1 if spec.get("zygote") else self.take_tmp(spec["tmp_mb"], inherited=True)  # (a zygote's: a tmpfs)
        try:
            t = Template(self.cfg, self.template_filter, spec, out_fd, network, tmp_fd)
        finally:
            self.tmp.release(tmp_fd)
        self.templates[t.id] = t
        self.sel.register(t.ctl, selectors.EVENT_READ, t)

    def clone(self, spec: dict, out_fd: int) -> None:
        """Answered now from a checked spare, or once one is made and checked (or the template is rejected)."""
        t = self.templates.get(spec["template"])
        if t is None or not t.ready:
            why = self.rejected.get(spec["template"])
            raise OSError(f"template {spec['template']} {REJECTED}: {why}" if why else
                          f"no ready template {spec['template']}")
        if len(t.waiters) >= MAX_WAITERS:
            raise OSError(f"too many environments waiting for template {t.id}")
        t.waiters.append((spec, os.dup(out_fd)))
        if t.spare is None:
            self.begin_spare(t)
        elif t.spare.verified and t.spare.go is None:
            self.serve_waiter(t, t.spare)

    def begin_spare(self, t: Template) -> None:
        try:
            spare = t.start_spare(self.strict_bpf, -1 if t.zygote else self.take_tmp(t.tmp_mb))
        except verify.Rejected as exc:
            self.reject(t, str(exc))
            return
        except OSError as exc:
            self.reject(t, f"could not make an environment: {exc}", hostile=False)
            return
        self.sel.register(spare.sock, selectors.EVENT_READ, ("clone", t, spare))

    def advance(self, t: Template, spare: Spare) -> None:
        """Take a spare one step further: out of the template's cgroup, checked, then ready or handed out."""
        if spare.host_pid and spare.ns_pid and not spare.moved:
            if not _pid_one(spare.host_pid):
                raise verify.Rejected(f"process {spare.host_pid} is not the first of its own PID namespace")
            t.clones[spare.ns_pid] = spare.host_pid
            t.made += 1
            try:
                self.pidfds[spare.host_pid] = fd = os.pidfd_open(spare.host_pid)
            except OSError as exc:
                raise verify.Rejected(f"its clone went away: {exc}") from None
            self.sel.register(fd, selectors.EVENT_READ, ("exit", t, spare.host_pid))
            t.prepare_next()  # the template leaves the spare's cgroup (frozen until it is asked again)
            spare.moved = True
            spare.net = self.plane.attach(spare.host_pid)  # a template's spare may run before "go": its rules now
            if spare.tmp_fd >= 0:  # its own /tmp, from outside: the template never holds it
                attach_in(fd, spare.tmp_fd)
                self.tmp.release(spare.tmp_fd)
                spare.tmp_fd = -1
            self.plane.restrict(spare.host_pid, None if t.zygote else t.egress)
        if not spare.moved or spare.verified:
            return
        if t.zygote and spare.go is None:
            spare.verified = True  # only Kindling's code has run in it so far: it is checked after it drops
        elif spare.dropped:
            spare.verified = t.check(spare, self.taken_namespaces(spare.host_pid))
        if not spare.verified:
            return
        if spare.go is not None:  # a zygote's clone, checked after it dropped: answer its request
            req, _ = spare.go
            self.hand_out(t, spare, req)
        elif not t.ready:
            t.ready = True
            self.answer(t.req, {"ok": True, "template": t.id})
        if t.spare is spare and t.waiters:
            self.serve_waiter(t, spare)

    def serve_waiter(self, t: Template, spare: Spare) -> None:
        spec, out_fd = t.waiters.pop(0)
        try:
            if not t.zygote:  # anything it forked since it was checked
                spare.deadline = 0.0
                t.check(spare, self.taken_namespaces(spare.host_pid), again=True)
            tmp_fd = -1
            if t.zygote:  # a zygote's clone runs its function's init right after "go", in its own /tmp
                self.plane.restrict(spare.host_pid, spec.get("egress"))
                tmp_fd = self.take_tmp(spec["tmp_mb"])
            try:
                t.go(spare, spec, out_fd, tmp_fd)
            finally:
                self.tmp.release(tmp_fd)
        except verify.Rejected as exc:
            self.answer(spec["req"], {"ok": False, "error": f"template {t.id} {REJECTED}: {exc}"})
            self.reject(t, str(exc))
            return
        except OSError as exc:  # not in the code store: that request fails, the spare stays
            self.answer(spec["req"], {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            os.close(out_fd)
        if t.zygote:  # its clone binds its code and drops now: answered once it says so and passes the check
            spare.go = (spec["req"], spec)
            spare.verified = False
            spare.deadline = time.monotonic() + DROP_WAIT
            return
        self.hand_out(t, spare, spec["req"])

    def hand_out(self, t: Template, spare: Spare, req: int) -> None:
        self.sel.unregister(spare.sock)
        spare.sock.close()
        spare.cgroup.release()
        t.spare = None
        self.runtimes[spare.host_pid] = spare.cgroup
        self.taken[spare.host_pid] = spare.ns
        self.answer(req, {"ok": True, "pid": spare.host_pid, "cgroup": spare.cgroup.name}, [spare.listener])
        _close(spare.listener)
        if t.waiters:
            self.begin_spare(t)

    def taken_namespaces(self, pid: int) -> dict[str, int]:
        """The namespaces of other live clones (the check looks again at one it finds in common: the
        kernel reuses the number of a namespace that is gone)."""
        return {ns: host for host, names in self.taken.items() if host != pid for ns in names}

    def reject(self, t: Template, reason: str, hostile: bool = True) -> None:
        """Kill a template that broke the rules; cold starts of its version fall back (Templates.forget)."""
        kind = "zygote" if t.zygote else "template"
        print(f"kindling spawner: {kind} {t.id} {REJECTED if hostile else 'failed'} ({reason}): it is killed, "
              f"and cold starts of its {'runtime' if t.zygote else 'version'} start "
              f"{'fresh interpreters' if t.zygote else 'from the zygote or fresh interpreters'}",
              file=sys.stderr) if hostile or t.ready else None  # a failed init is Kindling's to report
        error = f"{kind} {t.id} {REJECTED if hostile else 'failed'}: {reason}"
        if hostile:
            self.rejected[t.id] = reason
            while len(self.rejected) > 1000:
                self.rejected.pop(next(iter(self.rejected)))
        if self.templates.get(t.id) is t:
            del self.templates[t.id]
        self.drop_template(t, error)

    def drop_template(self, t: Template, error: str = "") -> None:
        """Stop using a template: requests waiting on it fail, its spare and what its init left running are
        killed. The template itself (PID 1 of the PID namespace its clones' namespaces are nested in: they
        would die with it) stays frozen until its last clone has exited (``retired``)."""
        waiting = [spec["req"] for spec, _ in t.waiters]
        if t.spare is not None and t.spare.go is not None:
            waiting.append(t.spare.go[0])
        if not t.ready:
            waiting.append(t.req)
        for sock in (t.ctl, t.spare.sock if t.spare is not None else None):
            try:
                self.sel.unregister(sock)  # type: ignore[arg-type]
            except (KeyError, ValueError):
                pass
        live = [host for host in t.clones.values() if host in self.pidfds]
        if t.spare is not None:
            if t.spare.host_pid in live:
                live.remove(t.spare.host_pid)
            if (group := t.kill_spare(t.spare)) is not None:
                self.leftover.append(group)
            t.spare = None
        if live and t.next is not None:
            for _, fd in t.waiters:
                _close(fd)
            t.waiters.clear()
            t.cgroup.kill()
            self.leftover.append(t.cgroup)
            t.thaw(False)
            t.awake_until = 0.0
            self.retired[t.id] = t
        else:
            for group in t.discard():
                group.kill()
                self.leftover.append(group)
        for req in waiting:
            self.answer(req, {"ok": False, "error": error or f"template {t.id} was dropped"})

    def from_template(self, t: Template) -> None:
        """A template said something: ready, a clone's PID in its namespace, or a clone's exit status."""
        doc = t.message()
        if doc is None:
            return
        if t.messages > 64 + 4 * t.made:
            raise verify.Rejected("too many messages")
        if doc == b"ready":
            self.begin_spare(t)  # answered once its first clone has passed the check
        elif isinstance(doc, dict) and "cloned" in doc:
            assert t.spare is not None
            t.spare.ns_pid = doc["cloned"]
            self.advance(t, t.spare)
        elif isinstance(doc, dict):
            host = t.clones.pop(doc["exit"], 0)
            if host:
                self.exited(host, doc["code"])

    def from_clone(self, t: Template, spare: Spare) -> None:
        t.from_clone(spare)
        self.advance(t, spare)

    def clone_gone(self, t: Template, host: int) -> None:
        """A clone's pidfd: it has exited. Its status is read while it is a zombie (its template, frozen,
        has not reaped it); then the template is thawed a moment to reap it."""
        fd = self.pidfds.pop(host)
        self.sel.unregister(fd)
        os.close(fd)
        self.taken.pop(host, None)
        code = _exit_code(host)
        if code is not None:
            self.exited(host, code)
        elif host in self.runtimes:
            self.unreported[host] = time.monotonic() + WAKE
        if self.retired.get(t.id) is t:
            if not [h for h in t.clones.values() if h in self.pidfds]:  # its last clone: it can go now
                del self.retired[t.id]
                for group in t.discard():
                    group.kill()
                    self.leftover.append(group)
                return
        elif self.templates.get(t.id) is not t:
            return
        spare = t.spare
        if spare is not None and spare.host_pid == host:  # the environment being made, or set up, exited
            self.sel.unregister(spare.sock)
            if (dead := t.kill_spare(spare)) is not None:
                self.leftover.append(dead)
            t.spare = None
            t.failures += 1
            if spare.go is not None:  # e.g. its function's code was deleted meanwhile: that request fails
                self.answer(spare.go[0], {"ok": False, "error": "the environment exited during its set-up"})
            if t.failures > MAX_FAILURES:
                self.reject(t, f"{t.failures} environments exited during their set-up", hostile=False)
                return
            if t.waiters:
                self.begin_spare(t)
        if t.next is not None and (t.spare is None or t.spare.moved):
            t.thaw(True)
            t.awake_until = time.monotonic() + WAKE

    def exited(self, host: int, code: int) -> None:
        self.plane.gone(host)
        self.unreported.pop(host, None)
        if self.runtimes.pop(host, None) is not None:
            self.notify({"exit": host, "code": code})

    def tick(self) -> float | None:
        """Deadlines: spares not made or checked in time, templates to freeze again, exits not reported.
        Returns how soon to look again."""
        now, wait = time.monotonic(), None
        for t in list(self.retired.values()):
            if t.awake_until and now >= t.awake_until:
                t.awake_until = 0.0
                t.thaw(False)
            elif t.awake_until:
                wait = _sooner(wait, t.awake_until - now)
        for t in list(self.templates.values()):
            spare = t.spare
            if spare is not None and not spare.verified:
                try:
                    if now > spare.deadline and not (spare.moved and spare.dropped):  # else the check says why
                        raise verify.Rejected("no checked environment in time" if spare.go is None else
                                              "its clone did not drop its privileges in time")
                    self.advance(t, spare)
                except verify.Rejected as exc:
                    self.reject(t, str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - that template is dropped, not the spawner
                    self.reject(t, f"{type(exc).__name__}: {exc}", hostile=False)
                    continue
                if not spare.verified:  # a clone that said it dropped is looked at often; else its deadline
                    wait = _sooner(wait, POLL if spare.dropped else spare.deadline - now)
            if t.awake_until and (t.spare is None or t.spare.moved):
                if now >= t.awake_until:
                    t.awake_until = 0.0
                    t.thaw(False)
                else:
                    wait = _sooner(wait, t.awake_until - now)
        for host, deadline in list(self.unreported.items()):
            if now >= deadline:
                self.exited(host, -signal.SIGKILL)  # its template did not say: reported as killed
            else:
                wait = _sooner(wait, deadline - now)
        return wait

    def request(self) -> bool:
        self.last_request = time.monotonic()
        try:
            msg, fds, _, _ = socket.recv_fds(self.server, MSG, 2)
        except OSError:  # reset: Kindling was killed with requests unread
            msg, fds = b"", []
        if not msg:  # Kindling has gone: so does everything it ran
            self.shutdown()
            return False
        spec = json.loads(msg)
        try:
            if spec["op"] == "spawn":
                self.spawn(spec, fds[0])
            elif spec["op"] == "template":
                self.template(spec, fds[0])
            elif spec["op"] == "clone":
                self.clone(spec, fds[0])
            elif spec["op"] == "drop":
                t = self.templates.pop(spec["template"], None)
                if t is not None:
                    self.drop_template(t)
                self.rejected.pop(spec["template"], None)
                self.answer(spec["req"], {"ok": True})
        except Exception as exc:  # answered as an error; the spawner goes on
            self.answer(spec["req"], {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            if spec["op"] in ("spawn", "clone"):
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        return True

    def shutdown(self) -> None:
        """Kill everything this spawner made, reap it, and only then remove the cgroups (a cgroup with
        a zombie in it cannot be removed)."""
        groups = list(self.runtimes.values()) + [shell.cgroup for shell in self.pool] + self.leftover
        for t in list(self.templates.values()) + list(self.retired.values()):
            groups += t.discard()
        for shell in self.pool:
            shell.discard()
        for cgroup in groups:
            cgroup.kill()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.005)
        for cgroup in groups:
            cgroup.destroy()
        self.tmp.close()
        try:
            self.plane.close()
        except Exception as exc:  # noqa: BLE001 - what is left is removed by the next server's start
            print(f"kindling spawner: could not remove the network plane: {exc!r}", file=sys.stderr)

    def reap(self) -> None:
        self.leftover = [g for g in self.leftover if not g.try_remove()]
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.runtimes:
                self.exited(pid, os.waitstatus_to_exitcode(status))

    def run(self) -> None:
        self.sel.register(self.server, selectors.EVENT_READ, "server")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.fill()
        while True:
            try:
                wait = self.tick()
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop every cold start
                print(f"kindling spawner: {exc!r}; it goes on", file=sys.stderr)
                wait = 0.1
            if self.short() or self.tmp.short() is not None:
                ahead = max(0.0, (QUIET if self.short() else TMP_QUIET) - (time.monotonic() - self.last_request))
                wait = ahead if wait is None else min(wait, ahead)
            if self.leftover:
                wait = 0.1 if wait is None else min(wait, 0.1)
            for key, _ in self.sel.select(timeout=wait):
                if key.data == "signal":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                elif key.data == "server":
                    if not self.request():
                        return
                else:
                    self.event(key.data)
            self.reap()
            self.fill()

    def event(self, data: Template | tuple) -> None:
        """Something from a template or one of its clones; one template's trouble never stops the spawner."""
        t: Template = data if isinstance(data, Template) else data[1]
        try:
            if isinstance(data, Template):
                self.from_template(data)
            elif data[0] == "clone":
                if self.templates.get(t.id) is t and t.spare is not None and t.spare is data[2]:
                    self.from_clone(t, t.spare)
            else:
                self.clone_gone(t, data[2])
        except verify.Rejected as exc:
            if self.templates.get(t.id) is t:
                self.reject(t, str(exc))
        except Exception as exc:  # noqa: BLE001 - anything else: that template is dropped, not the spawner
            if self.templates.get(t.id) is t:
                self.reject(t, f"{type(exc).__name__}: {exc}", hostile=False)


def main() -> None:
    # Ctrl-C or a SIGTERM to the process group reaches the spawner too: it must not die before Kindling, or the
    # frozen environments and templates it made would be left frozen for ever. It ends when Kindling's socket
    # closes (however Kindling ends), killing and reaping everything first (Spawner.shutdown).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server = socket.socket(fileno=int(sys.argv[1]))
    msg = server.recv(MSG)
    Spawner(server, Config(json.loads(msg))).run()


if __name__ == "__main__":
    main()
