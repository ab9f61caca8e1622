"""A strict stand-in for `systemctl` on machines where systemd is not PID 1 (our containers), for tests and the
loopback robot: the Ansible play enables and starts the router service for real, and the stand-in checks the
unit as systemd would, then runs the unit's own command under a small supervisor.

    systemctl daemon-reload | show UNIT | is-enabled UNIT | is-active UNIT | status UNIT
    systemctl enable UNIT | disable UNIT | start UNIT | stop UNIT | restart UNIT | list-unit-files [PATTERN]

What is real: units are read from `$SYSTEMD_STANDIN_ROOT/etc/systemd/system` (the root plays `/`, like
`systemctl --root`); `enable` and `start` refuse a unit that `systemd-analyze verify` (Debian's systemd package)
finds any fault with, warnings included, and one that uses a directive the stand-in cannot honour; `enable`
makes the `WantedBy=` symlink; `start` refuses a unit changed on disk since `daemon-reload` (systemd would run the
old one); the command runs as `User=`/`Group=` (the stand-in runs as root), with `Environment=`,
`EnvironmentFile=`, `WorkingDirectory=`, `UMask=`, `ReadWritePaths=` that must exist, output appended to
`<state>/<unit>.journal`; `Restart=on-failure` restarts it after `RestartSec=` up to `StartLimitBurst=` times
in `StartLimitIntervalSec=`; `stop` sends SIGTERM and SIGKILL after `TimeoutStopSec=`.

What is not: the sandboxing directives (`NoNewPrivileges=`, `ProtectSystem=`, ...) are checked by
`systemd-analyze` but not enforced (no namespaces here); `status` lists them as such. State (pids, what
`daemon-reload` loaded) lives in `$SYSTEMD_STANDIN_ROOT/run/systemd-standin/`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import DistillError

VERSION = "systemd 252 (252-standin)"
# [section] -> directives the stand-in honours
SUPPORTED = {
    "Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires", "StartLimitIntervalSec",
             "StartLimitBurst"},
    "Service": {"Type", "ExecStart", "Restart", "RestartSec", "TimeoutStopSec", "TimeoutStartSec", "User", "Group",
                "SupplementaryGroups", "WorkingDirectory", "Environment", "EnvironmentFile", "UMask",
                "StandardOutput", "StandardError", "SyslogIdentifier", "KillMode", "KillSignal", "ReadWritePaths"},
    "Install": {"WantedBy"},
}
# Sandboxing: systemd-analyze checks the syntax; nothing here can enforce them.
NOT_ENFORCED = {"NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "ProtectClock", "ProtectHostname", "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime",
                "RestrictSUIDSGID", "LockPersonality", "MemoryDenyWriteExecute", "SystemCallArchitectures",
                "SystemCallFilter", "CapabilityBoundingSet", "AmbientCapabilities", "ReadOnlyPaths", "RemoveIPC",
                "PrivateUsers", "DevicePolicy", "DeviceAllow", "ProtectProc", "ProcSubset"}
SERVICE_TYPES = ("simple", "exec")
RESTARTS = ("no", "on-failure", "always")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLEAN_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE}


class UnitError(DistillError):
    pass


# ---- where things are -----------------------------------------------------------------------------------------


def root() -> Path:
    return Path(os.environ.get("SYSTEMD_STANDIN_ROOT") or "/")


def unit_dir() -> Path:
    return root() / "etc" / "systemd" / "system"


def state_dir() -> Path:
    path = root() / "run" / "systemd-standin"
    path.mkdir(parents=True, exist_ok=True)
    return path


def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def unit_path(name: str) -> Path:
    return unit_dir() / unit_name(name)


# ---- parsing and checking ------------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> [(key, value)] in order (keys repeat: Environment=, After=), continuation lines joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    pending = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
        elif "=" in line and current is not None:
            key, value = line.split("=", 1)
            sections[current].append((key.strip(), value.strip()))
        else:
            raise UnitError(path, f"line {number}: not a section header or key=value: {raw.strip()!r}")
    return sections


def values(unit: dict, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit: dict, section: str, key: str, default: str | None = None) -> str | None:
    found = values(unit, section, key)
    return found[-1] if found else default


def verify(path: Path) -> dict:
    """systemd-analyze verify (any output is a fault), then what the stand-in itself needs; the parsed unit."""
    if not path.is_file():
        raise UnitError(path, "unit file not found")
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise UnitError("systemd-analyze", "not installed: the stand-in checks units with it (apt-get install systemd)")
    done = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    if done.returncode != 0 or complaints:
        raise UnitError(path, "systemd-analyze verify: " + " | ".join(complaints or [f"exit {done.returncode}"]))
    unit = parse_unit(path)
    for section, entries in unit.items():
        if section not in SUPPORTED:
            raise UnitError(path, f"[{section}]: the stand-in knows [Unit], [Service] and [Install] only")
        for key, _ in entries:
            if key not in SUPPORTED[section] and not (section == "Service" and key in NOT_ENFORCED):
                raise UnitError(path, f"[{section}] {key}=: the stand-in cannot honour it")
    kind = value(unit, "Service", "Type", "simple")
    if kind not in SERVICE_TYPES:
        raise UnitError(path, f"Type={kind}: the stand-in runs {' and '.join(SERVICE_TYPES)} services only")
    if len(values(unit, "Service", "ExecStart")) != 1:
        raise UnitError(path, "exactly one ExecStart= is needed")
    if value(unit, "Service", "Restart", "no") not in RESTARTS:
        raise UnitError(path, f"Restart={value(unit, 'Service', 'Restart')}: the stand-in knows {', '.join(RESTARTS)}")
    for key, lookup in (("User", pwd.getpwnam), ("Group", grp.getgrnam)):
        name = value(unit, "Service", key)
        if name:
            try:
                lookup(name)
            except KeyError:
                raise UnitError(path, f"{key}={name}: no such {key.lower()} on this machine") from None
    return unit


# ---- state -----------------------------------------------------------------------------------------------------


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _read(name: str) -> dict:
    path = state_dir() / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write(name: str, state: dict) -> None:
    path = state_dir() / f"{name}.json"
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def loaded() -> dict[str, str]:
    path = state_dir() / "loaded.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def daemon_reload() -> None:
    snapshot = {p.name: _digest(p) for p in unit_dir().glob("*.service")} if unit_dir().is_dir() else {}
    (state_dir() / "loaded.json").write_text(json.dumps(snapshot))


def need_reload(name: str) -> bool:
    """systemd runs what it loaded: a unit changed on disk since then needs `daemon-reload`."""
    known = loaded()
    return name in known and known[name] != _digest(unit_path(name))


def enabled_links(name: str) -> list[Path]:
    return sorted(unit_dir().glob(f"*.wants/{name}")) if unit_dir().is_dir() else []


def active_state(name: str) -> tuple[str, str]:
    state = _read(name)
    if _alive(state.get("supervisor")):
        return ("activating", "auto-restart") if state.get("sub") == "auto-restart" else ("active", "running")
    if state.get("result") not in (None, "success"):
        return "failed", "failed"
    return "inactive", "dead"


# ---- verbs -----------------------------------------------------------------------------------------------------


def show(name: str) -> str:
    path = unit_path(name)
    props = {"Id": name, "Names": name, "FragmentPath": str(path) if path.is_file() else ""}
    if not path.is_file():
        props.update(LoadState="not-found", ActiveState="inactive", SubState="dead", UnitFileState="")
    else:
        try:
            verify(path)
            props["LoadState"] = "loaded"
        except UnitError as err:
            props.update(LoadState="bad-setting", LoadError=f"org.freedesktop.systemd1.BadUnitSetting \"{err}\"")
        active, sub = active_state(name)
        state = _read(name)
        props.update(ActiveState=active, SubState=sub, UnitFileState="enabled" if enabled_links(name) else "disabled",
                     MainPID=str(state.get("main") or 0) if active == "active" else "0",
                     ExecMainPID=str(state.get("main") or 0), NRestarts=str(state.get("restarts", 0)),
                     Result=state.get("result") or "success", NeedDaemonReload="yes" if need_reload(name) else "no")
    return "\n".join(f"{k}={v}" for k, v in props.items())


def enable(name: str) -> None:
    path = unit_path(name)
    unit = verify(path)
    targets = " ".join(values(unit, "Install", "WantedBy")).split()
    if not targets:
        raise UnitError(path, "[Install] WantedBy= is missing: nothing would start it at boot")
    for target in targets:
        link = unit_dir() / f"{target}.wants" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(path)
            print(f"Created symlink {link} → {path}.", file=sys.stderr)


def disable(name: str) -> None:
    for link in enabled_links(name):
        link.unlink()
        print(f"Removed \"{link}\".", file=sys.stderr)


def start(name: str) -> None:
    path = unit_path(name)
    if need_reload(name):
        raise UnitError(path, "changed on disk since the last daemon-reload: systemd would start the old unit; run "
                              "'systemctl daemon-reload'")
    unit = verify(path)
    if active_state(name)[0] in ("active", "activating"):
        return
    for rw in " ".join(values(unit, "Service", "ReadWritePaths")).split():
        if not rw.startswith("-") and not Path(rw.lstrip("+")).exists():
            raise UnitError(path, f"ReadWritePaths={rw}: does not exist (systemd fails with 226/NAMESPACE)")
    known = loaded()
    known[name] = _digest(path)
    (state_dir() / "loaded.json").write_text(json.dumps(known))
    journal = (state_dir() / f"{name}.journal").open("a")
    supervisor = subprocess.Popen([sys.executable, "-m", "distill.standins.systemd", "_supervise", name],
                                  stdin=subprocess.DEVNULL, stdout=journal, stderr=subprocess.STDOUT,
                                  start_new_session=True, env={**os.environ, "PYTHONPATH": _package_root()})
    _write(name, {"supervisor": supervisor.pid, "sub": "start", "result": None, "restarts": 0})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # Type=exec: started once the command was executed
        state = _read(name)
        if state.get("main") or supervisor.poll() is not None:
            break
        time.sleep(0.05)
    state = _read(name)
    if supervisor.poll() is not None and state.get("result") not in (None, "success"):
        raise UnitError(path, f"failed to start: {state.get('result')} (journal: {state_dir() / (name + '.journal')})")


def stop(name: str) -> None:
    state = _read(name)
    supervisor = state.get("supervisor")
    if not _alive(supervisor):
        return
    os.kill(supervisor, signal.SIGTERM)
    deadline = time.monotonic() + float(state.get("stop_timeout", 90)) + 5
    while _alive(supervisor) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(supervisor):
        os.kill(supervisor, signal.SIGKILL)


def status(name: str) -> str:
    path = unit_path(name)
    active, sub = active_state(name)
    state = _read(name)
    lines = [f"● {name} - {value(parse_unit(path), 'Unit', 'Description', '') if path.is_file() else ''}",
             f"     Loaded: {'loaded' if path.is_file() else 'not-found'} ({path}; "
             f"{'enabled' if enabled_links(name) else 'disabled'})",
             f"     Active: {active} ({sub})", f"   Main PID: {state.get('main') or '-'}",
             f"   Restarts: {state.get('restarts', 0)}"]
    if path.is_file():
        ignored = sorted({k for k, _ in parse_unit(path).get("Service", []) if k in NOT_ENFORCED})
        if ignored:
            lines.append(f"  Stand-in: checked, not enforced: {', '.join(ignored)}")
    journal = state_dir() / f"{name}.journal"
    if journal.is_file():
        lines += ["", *journal.read_text(errors="replace").splitlines()[-10:]]
    return "\n".join(lines)


def list_unit_files(pattern: str | None) -> str:
    names = sorted(p.name for p in unit_dir().glob("*.service")) if unit_dir().is_dir() else []
    rows = [f"{n} {'enabled' if enabled_links(n) else 'disabled'}" for n in names
            if pattern is None or fnmatch.fnmatch(n, pattern)]
    if not rows:
        raise LookupError
    return "UNIT FILE STATE\n" + "\n".join(rows) + f"\n\n{len(rows)} unit files listed."


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


# ---- the supervisor (what systemd itself does for one service) --------------------------------------------------


def _seconds(text: str | None, default: float) -> float:
    if not text:
        return default
    match = re.fullmatch(r"([0-9.]+)\s*(ms|s|min)?", text.strip())
    if not match:
        return default
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "min": 60, None: 1}[match.group(2)]


def environment(unit: dict) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "LANG": os.environ.get("LANG", "C.UTF-8")}
    user = value(unit, "Service", "User")
    if user:
        entry = pwd.getpwnam(user)
        env.update(USER=entry.pw_name, LOGNAME=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell)
    for item in values(unit, "Service", "EnvironmentFile"):
        optional, path = item.startswith("-"), Path(item.lstrip("-"))
        if not path.is_file():
            if optional:
                continue
            raise UnitError(path, "EnvironmentFile= not found")
        for line in path.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, val = line.split("=", 1)
                env[key.strip()] = val.strip().strip('"')
    for item in values(unit, "Service", "Environment"):
        for assignment in shlex.split(item):
            key, _, val = assignment.partition("=")
            env[key] = val
    return env


def command(unit: dict, env: dict[str, str]) -> list[str]:
    """ExecStart= split as systemd does (quotes), ${VAR} and $VAR words expanded from the unit's environment."""
    words = shlex.split(value(unit, "Service", "ExecStart").lstrip("-@:+!"))
    words = [re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), w) for w in words]
    words = [env.get(w[1:], "") if re.fullmatch(r"\$\w+", w) else w for w in words]
    if not words or not os.path.isabs(words[0]):
        raise UnitError("ExecStart", f"{words[:1]}: must be an absolute path")
    return words


def _demote(unit: dict):
    user, group = value(unit, "Service", "User"), value(unit, "Service", "Group")
    umask = int(value(unit, "Service", "UMask", "0022"), 8)
    extra = " ".join(values(unit, "Service", "SupplementaryGroups")).split()

    def apply() -> None:
        os.umask(umask)
        if os.geteuid() != 0 or not (user or group):
            return
        entry = pwd.getpwnam(user) if user else None
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
        if entry:
            os.initgroups(entry.pw_name, gid)
        os.setgroups(sorted(set(os.getgroups()) | {grp.getgrnam(g).gr_gid for g in extra}))
        os.setgid(gid)
        if entry:
            os.setuid(entry.pw_uid)

    return apply


def supervise(name: str) -> int:
    """Run the unit's command; restart it as Restart= says; SIGTERM stops it (then SIGKILL after the timeout)."""
    unit = parse_unit(unit_path(name))
    restart = value(unit, "Service", "Restart", "no")
    pause = _seconds(value(unit, "Service", "RestartSec"), 0.1)
    stop_timeout = _seconds(value(unit, "Service", "TimeoutStopSec"), 90)
    burst = int(value(unit, "Unit", "StartLimitBurst", "5"))
    window = _seconds(value(unit, "Unit", "StartLimitIntervalSec"), 10)
    state = {"supervisor": os.getpid(), "main": None, "sub": "start", "result": None, "restarts": 0,
             "stop_timeout": stop_timeout}
    stopping = {"now": False}
    child: dict[str, subprocess.Popen | None] = {"proc": None}

    def on_term(signum, frame):
        stopping["now"] = True
        proc = child["proc"]
        if proc is not None and proc.poll() is None:
            proc.terminate()

    signal.signal(signal.SIGTERM, on_term)
    starts: list[float] = []
    while True:
        try:
            env = environment(unit)
            argv = command(unit, env)
            cwd = value(unit, "Service", "WorkingDirectory", "/")
            proc = subprocess.Popen(argv, env=env, cwd=cwd.lstrip("-") or "/", preexec_fn=_demote(unit),
                                    stdin=subprocess.DEVNULL)
        except (OSError, UnitError, KeyError) as err:
            state.update(sub="failed", result="exit-code", main=None)
            _write(name, state)
            print(f"{name}: failed to execute: {err}", flush=True)
            return 1
        child["proc"] = proc
        starts.append(time.monotonic())
        state.update(main=proc.pid, sub="running")
        _write(name, state)
        print(f"{name}: started {' '.join(argv)} (pid {proc.pid})", flush=True)
        try:
            code = _wait(proc, stopping, stop_timeout)
        finally:
            child["proc"] = None
        if stopping["now"]:
            state.update(main=None, sub="dead", result="success")
            _write(name, state)
            return 0
        failed = code != 0 and not (code < 0 and -code in CLEAN_SIGNALS)
        print(f"{name}: main process exited, code {code}", flush=True)
        recent = [t for t in starts if time.monotonic() - t < window]
        if restart == "always" or (restart == "on-failure" and failed):
            if len(recent) >= burst:
                state.update(main=None, sub="failed", result="start-limit-hit")
                _write(name, state)
                print(f"{name}: start request repeated too quickly, refusing to start", flush=True)
                return 1
            state.update(main=None, sub="auto-restart", restarts=state["restarts"] + 1)
            _write(name, state)
            time.sleep(pause)
            if stopping["now"]:
                state.update(sub="dead", result="success")
                _write(name, state)
                return 0
            continue
        state.update(main=None, sub="failed" if failed else "dead", result="exit-code" if failed else "success")
        _write(name, state)
        return 0


def _wait(proc: subprocess.Popen, stopping: dict, stop_timeout: float) -> int:
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if stopping["now"]:
                try:
                    return proc.wait(timeout=stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()


# ---- CLI -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = [a for a in (sys.argv[1:] if argv is None else argv)
            if a not in ("--no-block", "--system", "--no-pager", "-l", "--full", "--quiet", "-q", "--no-ask-password")]
    if any(a in ("--user", "--global") for a in args):
        print("Failed to connect to bus: the stand-in manages the system scope only", file=sys.stderr)
        return 1
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if args[0] == "--version":
        print(VERSION)
        return 0
    verb, names = args[0], [unit_name(n) for n in args[1:]]
    try:
        return _run(verb, names)
    except UnitError as err:
        print(f"Failed to {verb} {' '.join(names)}: {err}", file=sys.stderr)
        return 1


def _run(verb: str, names: list[str]) -> int:
    if verb == "daemon-reload":
        daemon_reload()
    elif verb == "_supervise":
        return supervise(names[0])
    elif verb == "show":
        print(show(names[0]))
    elif verb == "is-enabled":
        if not unit_path(names[0]).is_file():
            print(f"Failed to get unit file state for {names[0]}: No such file or directory", file=sys.stderr)
            return 1
        on = bool(enabled_links(names[0]))
        print("enabled" if on else "disabled")
        return 0 if on else 1
    elif verb == "is-active":
        active = active_state(names[0])[0]
        print(active)
        return 0 if active == "active" else 3
    elif verb == "status":
        print(status(names[0]))
        return 0 if active_state(names[0])[0] == "active" else 3
    elif verb == "list-unit-files":
        try:
            print(list_unit_files(names[0] if names else None))
        except LookupError:
            print("0 unit files listed.")
            return 1
    elif verb in ("enable", "disable", "start", "stop", "restart"):
        for name in names:
            if verb == "restart":
                stop(name)
                start(name)
            else:
                {"enable": enable, "disable": disable, "start": start, "stop": stop}[verb](name)
    else:
        print(f"Unknown command verb {verb} (the stand-in knows daemon-reload, show, is-enabled, is-active, status, "
              "list-unit-files, enable, disable, start, stop, restart).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
