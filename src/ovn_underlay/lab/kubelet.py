"""A kubelet STAND-IN for the lab (not kubelet): Pods bound to a node -> CRI calls on containerd.

No kubelet can be installed here.  This stand-in does the part of kubelet's
pod lifecycle that reaches the CNI plugin, with the calls kubelet makes:

* it registers its Node object, lists and watches the Pods with
  ``fieldSelector=spec.nodeName=<node>`` on the API server;
* for a new Pod: ``RunPodSandbox`` (metadata name, namespace, uid: containerd
  derives CNI_ARGS ``K8S_POD_NAMESPACE``/``K8S_POD_NAME``/``K8S_POD_UID`` from
  it), then ``CreateContainer`` + ``StartContainer`` of the Pod's first
  container from the lab's local image (its ``command``/``args``, by default
  ``httpd`` serving the image's /www on the first ``containerPort``, else 8080);
  then the Pod's status: ``podIP`` from ``PodSandboxStatus``, phase Running,
  condition Ready=False, and Ready=True once a TCP connection to podIP:port
  succeeds (made from the pod's own network namespace: the test process runs
  in the machine's namespace, which has no route to pods);
* for a Pod with ``deletionTimestamp``: ``StopPodSandbox`` +
  ``RemovePodSandbox``, then the final DELETE with ``gracePeriodSeconds: 0``
  (and the Pod's uid as precondition).

No restarts, probes, volumes, images or container statuses beyond that.  It
runs in the calling process (threads) and talks to containerd over its unix
socket, reachable from any network namespace.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from ovn_underlay.lab import cri
from ovn_underlay.lab.containerd import IMAGE

LOG = logging.getLogger(__name__)
DEFAULT_PORT = 8080
READY_TIMEOUT = 30.0
WATCH_TIMEOUT = 2
HTTP_TIMEOUT = 30.0

_PROBE = ("import socket,sys\n"
          "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=float(sys.argv[3]))\n"
          "if len(sys.argv)>4:\n"
          " s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); d=b''\n"
          " while True:\n"
          "  c=s.recv(4096)\n"
          "  if not c: break\n"
          "  d+=c\n"
          " sys.stdout.write(d.decode(errors='replace'))\n")


def tcp_probe(netns_path: str, ip: str, port: int, timeout: float = 2.0,
              http: bool = False) -> subprocess.CompletedProcess[str]:
    """Connect to ip:port from the network namespace at ``netns_path``.

    With ``http`` it sends an HTTP/1.0 GET and prints the whole answer.
    """
    argv = ["nsenter", f"--net={netns_path}", sys.executable, "-S", "-c", _PROBE, ip,
            str(port), str(timeout), *(["http"] if http else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10,
                          check=False)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeletStandIn:
    """A kubelet stand-in for node ``node_name``: the API server at ``api_url``, CRI at a socket."""

    def __init__(self, api_url: str, node_name: str, cri_socket: str,
                 image: str = IMAGE, node_ip: str = "") -> None:
        self.api_url = api_url.rstrip("/")
        self.node_name = node_name
        self.node_ip = node_ip
        self.image = image
        self.cri = cri.CriClient(cri_socket)
        self.sandboxes: dict[str, str] = {}
        """Pod uid -> sandbox id."""
        self.netns: dict[str, str] = {}
        """Pod uid -> the sandbox's network namespace path."""
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._pod_locks: dict[str, threading.Lock] = {}
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"kubelet-{node_name}")
        self._thread: threading.Thread | None = None

    # -- the API server --------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as reply:
            return json.loads(reply.read() or b"null")

    def register_node(self) -> None:
        """Create this node's Node object (Ready), as kubelet registers itself."""
        node: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.node_name,
                         "labels": {"kubernetes.io/hostname": self.node_name}},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady",
                                       "lastHeartbeatTime": _now(),
                                       "lastTransitionTime": _now()}],
                       "addresses": ([{"type": "InternalIP", "address": self.node_ip}]
                                     if self.node_ip else [])
                       + [{"type": "Hostname", "address": self.node_name}]}}
        try:
            self.request("POST", "/api/v1/nodes", node)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    def _watch(self, resource_version: str) -> Iterator[dict[str, Any]]:
        query = urllib.parse.urlencode({
            "watch": "true", "fieldSelector": f"spec.nodeName={self.node_name}",
            "resourceVersion": resource_version, "timeoutSeconds": str(WATCH_TIMEOUT),
            "allowWatchBookmarks": "true"})
        with urllib.request.urlopen(f"{self.api_url}/api/v1/pods?{query}",
                                    timeout=HTTP_TIMEOUT) as stream:
            for line in stream:
                if line.strip():
                    yield json.loads(line)

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> KubeletStandIn:
        """Register the node, adopt existing sandboxes, start watching."""
        self.register_node()
        for sandbox in self.cri.list_pod_sandbox():
            self.sandboxes.setdefault(sandbox.metadata.uid, sandbox.id)
        self._thread = threading.Thread(target=self._run, name=f"kubelet-{self.node_name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and working (sandboxes stay: containerd's close removes them)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=WATCH_TIMEOUT + HTTP_TIMEOUT)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.cri.close()

    def __enter__(self) -> KubeletStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        resource_version = ""
        while not self._stopping.is_set():
            try:
                if not resource_version:
                    listing = self.request("GET", "/api/v1/pods?" + urllib.parse.urlencode(
                        {"fieldSelector": f"spec.nodeName={self.node_name}"}))
                    resource_version = listing["metadata"]["resourceVersion"]
                    for pod in listing["items"]:
                        self._submit(pod)
                for event in self._watch(resource_version):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        resource_version = ""  # 410 Gone: list again
                        break
                    resource_version = obj.get("metadata", {}).get("resourceVersion",
                                                                   resource_version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._submit(obj)
                    if self._stopping.is_set():
                        break
            except (OSError, ValueError, KeyError) as exc:
                if not self._stopping.is_set():
                    LOG.warning("%s: watch failed: %s", self.node_name, exc)
                    time.sleep(0.5)

    def _submit(self, pod: dict[str, Any]) -> None:
        if not self._stopping.is_set():
            self._pool.submit(self._sync_logged, pod)

    def _sync_logged(self, pod: dict[str, Any]) -> None:
        uid = str(pod["metadata"].get("uid", ""))
        with self._lock:
            lock = self._pod_locks.setdefault(uid, threading.Lock())
        with lock:
            try:
                self.sync(pod)
            except Exception as exc:  # a stand-in reports, then carries on
                meta = pod["metadata"]
                message = f"{meta.get('namespace')}/{meta.get('name')}: {exc}"
                LOG.warning("%s: %s", self.node_name, message)
                with self._lock:
                    self.errors.append(message)

    # -- one pod ---------------------------------------------------------------
    def sync(self, pod: dict[str, Any]) -> None:
        """Bring containerd in line with ``pod`` (the latest version seen)."""
        meta = pod["metadata"]
        uid = str(meta["uid"])
        if meta.get("deletionTimestamp"):
            self._kill(pod)
            return
        if uid in self.sandboxes or pod.get("status", {}).get("phase") in ("Succeeded",
                                                                           "Failed"):
            return
        self._start_pod(pod)

    def _sandbox_config(self, pod: dict[str, Any]) -> Any:
        meta = pod["metadata"]
        labels = {"io.kubernetes.pod.name": meta["name"],
                  "io.kubernetes.pod.namespace": meta["namespace"],
                  "io.kubernetes.pod.uid": meta["uid"]}
        return cri.message("PodSandboxConfig", metadata=cri.message(
            "PodSandboxMetadata", name=meta["name"], namespace=meta["namespace"],
            uid=meta["uid"], attempt=0), hostname=meta["name"], labels=labels)

    @staticmethod
    def container_port(pod: dict[str, Any]) -> int:
        for container in pod["spec"].get("containers", [])[:1]:
            for port in container.get("ports") or []:
                return int(port["containerPort"])
        return DEFAULT_PORT

    def _start_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        port = self.container_port(pod)
        spec = (pod["spec"].get("containers") or [{}])[0]
        command = list(spec.get("command") or []) or ["httpd", "-f", "-p", str(port),
                                                      "-h", "/www"]
        sandbox_config = self._sandbox_config(pod)
        sandbox_id = self.cri.run_pod_sandbox(sandbox_config)
        self.sandboxes[uid] = sandbox_id
        container = cri.message(
            "ContainerConfig",
            metadata=cri.message("ContainerMetadata", name=spec.get("name", "main")),
            image=cri.message("ImageSpec", image=self.image), command=command,
            args=list(spec.get("args") or []),
            envs=[cri.message("KeyValue", key=str(e["name"]), value=str(e.get("value", "")))
                  for e in spec.get("env") or []])
        container_id = self.cri.create_container(sandbox_id, container, sandbox_config)
        self.cri.start_container(container_id)
        status = self.cri.pod_sandbox_status(sandbox_id)
        self.netns[uid] = status.netns
        self._patch_status(pod, status.ip, ready=False)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._stopping.is_set():
            if tcp_probe(status.netns, status.ip, port, timeout=1.0).returncode == 0:
                self._patch_status(pod, status.ip, ready=True)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{status.ip}:{port} accepted no connection within "
                                   f"{READY_TIMEOUT:.0f}s")
            time.sleep(0.2)

    def _patch_status(self, pod: dict[str, Any], ip: str, ready: bool) -> None:
        meta = pod["metadata"]
        flag = "True" if ready else "False"
        now = _now()
        conditions = [{"type": kind, "status": status, "lastTransitionTime": now}
                      for kind, status in (("PodScheduled", "True"), ("Initialized", "True"),
                                           ("ContainersReady", flag), ("Ready", flag))]
        status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                  "hostIP": self.node_ip or None, "startTime": now,
                  "conditions": conditions}
        self.request("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                     "/status", {"status": status}, "application/merge-patch+json")

    def _kill(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = str(meta["uid"])
        sandbox_id = self.sandboxes.get(uid)
        if sandbox_id is not None:
            self.cri.stop_pod_sandbox(sandbox_id)
            self.cri.remove_pod_sandbox(sandbox_id)
            del self.sandboxes[uid]
            self.netns.pop(uid, None)
        with contextlib.suppress(urllib.error.HTTPError):  # 404: already gone
            self.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/"
                         f"{meta['name']}", {"apiVersion": "v1", "kind": "DeleteOptions",
                                             "gracePeriodSeconds": 0,
                                             "preconditions": {"uid": uid}})


def main(argv: list[str] | None = None) -> int:
    """``python -m ovn_underlay.lab.kubelet``: one stand-in until SIGTERM or SIGINT."""
    import argparse
    import signal

    p = argparse.ArgumentParser(
        prog="python -m ovn_underlay.lab.kubelet",
        description="A kubelet STAND-IN for one lab node: registers the Node, watches the "
                    "Pods bound to it and runs them through containerd's CRI.")
    p.add_argument("--api", required=True, metavar="URL", help="the API server (http://...)")
    p.add_argument("--node", required=True, metavar="NAME", help="the node's name")
    p.add_argument("--cri-socket", required=True, metavar="PATH", help="containerd's socket")
    p.add_argument("--node-ip", default="", metavar="IP", help="the Node's InternalIP")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    kubelet = KubeletStandIn(args.api, args.node, args.cri_socket,
                             node_ip=args.node_ip).start()
    LOG.info("%s: watching the Pods bound to it on %s", args.node, args.api)
    done.wait()
    kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
