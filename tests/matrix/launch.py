"""A throwaway Synapse homeserver on loopback, for authlink's tests (see README.md beside this file).

Usage: tests/matrix/.venv/bin/python tests/matrix/launch.py DATA_DIR PORT [options]

Writes a minimal homeserver config, a log config and a fresh signing key into DATA_DIR, then runs
Synapse as a child process listening on 127.0.0.1:PORT (client API only). It stops Synapse
(SIGKILL: the data is disposable) when its stdin reaches EOF or receives a line, when its parent
dies, or on SIGTERM/SIGINT; with --cleanup it then removes DATA_DIR. If Synapse exits by itself
(a bad config, a port already taken) the launcher exits with Synapse's status and leaves DATA_DIR,
so the logs can be read.
"""

import argparse
import ctypes
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import time

import yaml
from signedjson.key import generate_signing_key, write_signing_keys


def unlimited():
    """Effectively no limit: the suite's users create rooms, invite, join and post as fast as tests go.
    (A fresh dict each time, or the YAML dump would be full of anchors.)"""
    return {"per_second": 100000, "burst_count": 100000}


# The tight message limit (--tight-rc-message): one event, then one more every 5 s.
TIGHT = {"per_second": 0.2, "burst_count": 1}


def homeserver_config(data, port, server_name, shared_secret, tight):
    return {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{port}/",
        "pid_file": os.path.join(data, "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                # No federation resource: nothing can federate in.
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {
            "name": "sqlite3",
            "args": {"database": os.path.join(data, "homeserver.db")},
        },
        "log_config": os.path.join(data, "log.config"),
        "media_store_path": os.path.join(data, "media_store"),
        "signing_key_path": os.path.join(data, "signing.key"),
        "report_stats": False,
        # Users are made through the admin API's shared-secret registration (no open sign-up).
        "registration_shared_secret": shared_secret,
        "enable_registration": False,
        "macaroon_secret_key": secrets.token_hex(32),
        "form_secret": secrets.token_hex(32),
        # Nothing federates out either, and no key server is ever asked.
        "federation_domain_whitelist": [],
        "federation_sender_instances": [],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "presence": {"enabled": False},
        "url_preview_enabled": False,
        "enable_metrics": False,
        "rc_message": TIGHT if tight else unlimited(),
        "rc_registration": unlimited(),
        "rc_login": {
            "address": unlimited(),
            "account": unlimited(),
            "failed_attempts": unlimited(),
        },
        "rc_joins": {"local": unlimited(), "remote": unlimited()},
        "rc_joins_per_room": unlimited(),
        "rc_invites": {
            "per_room": unlimited(),
            "per_user": unlimited(),
            "per_issuer": unlimited(),
        },
        "rc_room_creation": unlimited(),
        "rc_admin_redaction": unlimited(),
        "rc_3pid_validation": unlimited(),
        "rc_key_requests": unlimited(),
        "rc_media_create": unlimited(),
        "rc_delayed_event_mgmt": unlimited(),
        "rc_reports": unlimited(),
        "rc_user_directory": unlimited(),
        "rc_profile": unlimited(),
    }


def log_config(data):
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": os.path.join(data, "homeserver.log"),
                "encoding": "utf8",
            }
        },
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def write_config(data, port, server_name, shared_secret, tight):
    os.makedirs(data, exist_ok=True)
    config = os.path.join(data, "homeserver.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(homeserver_config(data, port, server_name, shared_secret, tight), f)
    with open(os.path.join(data, "log.config"), "w") as f:
        yaml.safe_dump(log_config(data), f)
    # What `--generate-keys` would write, without a second Synapse start-up (~2 s of imports).
    with open(os.path.join(data, "signing.key"), "w") as f:
        write_signing_keys(f, [generate_signing_key("a_" + secrets.token_hex(2))])
    return config


def die_with_parent():
    """In the child: SIGKILL when the launcher dies, however it dies (even by SIGKILL)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stdin_is_a_pipe():
    # Only a pipe or socket tells us the parent is gone; /dev/null or a TTY would end at once or never.
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir")
    p.add_argument("port", type=int)
    p.add_argument("--server-name", default=os.environ.get("SYNAPSE_SERVER_NAME", "authlink.test"))
    p.add_argument(
        "--shared-secret",
        default=os.environ.get("SYNAPSE_SHARED_SECRET", "authlink-test-registration-secret"),
        help="registration_shared_secret, for /_synapse/admin/v1/register",
    )
    p.add_argument(
        "--tight-rc-message",
        action="store_true",
        default=os.environ.get("SYNAPSE_TIGHT_RC_MESSAGE") == "1",
        help="rc_message per_second 0.2, burst_count 1 (env SYNAPSE_TIGHT_RC_MESSAGE=1)",
    )
    p.add_argument("--cleanup", action="store_true", help="remove DATA_DIR when told to stop")
    args = p.parse_args()

    data = os.path.abspath(args.data_dir)
    config = write_config(data, args.port, args.server_name, args.shared_secret, args.tight_rc_message)
    child = subprocess.Popen(
        [sys.executable, "-m", "synapse.app.homeserver", "-c", config],
        cwd=data,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )

    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watch_stdin = stdin_is_a_pipe()
    parent = os.getppid()
    while not stop:
        status = child.poll()
        if status is not None:
            print(f"launch.py: synapse exited by itself with {status}", file=sys.stderr)
            sys.exit(status or 1)
        if os.getppid() != parent:
            break
        if watch_stdin:
            ready, _, _ = select.select([0], [], [], 0.2)
            if ready:
                break  # a line, or EOF: either way we are told to stop
        else:
            time.sleep(0.2)

    child.kill()
    child.wait()
    if args.cleanup:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
