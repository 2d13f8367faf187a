"""brokers.py — private RabbitMQ and Redis servers for the relay tests, started by the tests.

RabbitMQ: Debian's rabbitmq-server run in the foreground as the current user, with its own
HOME (Erlang cookie), mnesia and log dirs, node name, AMQP, distribution and epmd ports on
loopback, no plugins; restartable on the same ports and data (durable queues survive).
Redis: redis-server on a free loopback port, no persistence. Both killed after.
Python 3 standard library only.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server"))
from hfserver import free_ports  # noqa: E402

RABBITMQ_SERVER = os.environ.get("RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server")
REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")


def wait_port(port, proc, what, log_path, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited %s:\n%s" % (what, proc.returncode, tail(log_path)))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("%s did not listen on %d:\n%s" % (what, port, tail(log_path)))


def tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


def available():
    """None when both servers can run here, else why not."""
    for b in (RABBITMQ_SERVER, REDIS_SERVER):
        if not os.access(b, os.X_OK):
            return "%s is not installed (scripts/deps test)" % b
    return None


class Rabbit:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hf-rabbit-")
        self.port, self.dist_port, self.epmd_port = free_ports(3)
        self.node = "hft%d@localhost" % self.port
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("loopback_users = none\nlisteners.tcp.default = 127.0.0.1:%d\n" % self.port)
        cookie = os.path.join(self.dir, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write("hfrelaytest%d" % self.port)
        os.chmod(cookie, 0o400)
        d = self.dir
        self.env = dict(os.environ, HOME=d, RABBITMQ_MNESIA_BASE=d + "/mnesia",
                        RABBITMQ_LOG_BASE=d + "/log", RABBITMQ_NODENAME=self.node,
                        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                        RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                        ERL_EPMD_PORT=str(self.epmd_port), ERL_EPMD_ADDRESS="127.0.0.1",
                        RABBITMQ_ENABLED_PLUGINS_FILE=d + "/enabled_plugins",
                        RABBITMQ_CONFIG_FILE=d + "/rabbitmq",
                        RABBITMQ_ADVANCED_CONFIG_FILE=d + "/advanced.config",
                        RABBITMQ_CONF_ENV_FILE=d + "/rabbitmq-env.conf",
                        RABBITMQ_PID_FILE=d + "/rabbit.pid")
        open(d + "/rabbitmq-env.conf", "w").close()
        self.proc = None
        self.url = "amqp://guest:guest@127.0.0.1:%d" % self.port
        self.start()

    def start(self):
        self.log_path = os.path.join(self.dir, "server-%d.log" % time.monotonic_ns())
        self.log = open(self.log_path, "wb")
        # Its own process group: the script, beam and their helpers go in one kill.
        self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env, stdout=self.log,
                                     stderr=self.log, cwd=self.dir, start_new_session=True)
        wait_port(self.port, self.proc, "rabbitmq-server", self.log_path)

    def kill(self):
        """SIGKILL, as a crash: confirmed persistent messages must survive it."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        # beam is gone; wait until the port is free for the restart.
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(0.1)
            except OSError:
                break

    def restart(self):
        self.kill()
        self.start()

    def ctl(self, *args):
        ctl = os.path.join(os.path.dirname(RABBITMQ_SERVER), "rabbitmqctl")
        return subprocess.run([ctl, "-n", self.node] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=60).stdout

    def queue_depths(self):
        out = self.ctl("list_queues", "-q", "--no-table-headers", "name", "messages")
        depths = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths

    def close(self):
        self.kill()
        # epmd daemonised itself out of our process group: stop it by its port.
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self.env,
                       capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hf-relay-redis-")
        self.port = free_ports(1)[0]
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", self.log_path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "redis-server", self.log_path)
        self.url = "redis://127.0.0.1:%d" % self.port

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port)] + list(args),
                              capture_output=True, text=True, timeout=30).stdout

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
