"""``python -m ovn_underlay.lab.kubeapi``: run the test API server until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import KubeApiServer


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or int(low) > int(high):
        raise argparse.ArgumentTypeError(f"expected A-B, got {text!r}")
    return int(low), int(high)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ovn_underlay.lab.kubeapi",
        description="A test Kubernetes API server: core/v1, events, discovery, coordination, "
                    "networking and apiextensions resources with resourceVersions, watches, "
                    "selectors, patches and optimistic concurrency as kube-apiserver has them. "
                    "Prints its URL once it listens; stops on SIGINT or SIGTERM.",
        epilog="SIGUSR1: the watch cache re-initializes (as kube-apiserver's does when its "
               "watch of etcd breaks): every open watch ends and watch requests get 429 "
               "'storage is (re)initializing' until SIGUSR2, after which the history "
               "begins anew (a watch from an older resourceVersion gets 410 Expired). Each "
               "prints what it did.")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 6443), metavar="HOST:PORT",
                   help="address and port to listen on (port 0: any free port; default "
                        "127.0.0.1:6443)")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve HTTPS with this PEM certificate (chain); needs --tls-key")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    p.add_argument("--tokens", metavar="FILE",
                   help="static token file, kube-apiserver's --token-auth-file format: CSV "
                        "lines token,user,uid[,\"group1,group2\"] (group1|group2 also "
                        "accepted); requests without one of these bearer tokens get 401. "
                        "Without it every request is accepted as system:anonymous")
    p.add_argument("--service-cluster-ip-range", default="198.18.128.0/20", metavar="CIDR",
                   help="where Service clusterIPs are allocated; its first address is the "
                        "default/kubernetes Service's (default 198.18.128.0/20)")
    p.add_argument("--service-node-port-range", type=_port_range, default=(30000, 32767),
                   metavar="A-B", help="where NodePort and LoadBalancer Services get their "
                                       "node ports (default 30000-32767)")
    p.add_argument("--advertise-address", metavar="IP",
                   help="the address in the default/kubernetes EndpointSlice and Endpoints "
                        "(default: the listen address, or 127.0.0.1 for a wildcard)")
    p.add_argument("--request-log", metavar="FILE",
                   help="append every request as a JSON line: user, groups, verb (get, list, "
                        "watch, create, update, patch, delete), apiGroup, resource, "
                        "subresource, namespace, name, code")
    p.add_argument("--watch-history", type=int, default=10000, metavar="N",
                   help="events kept per resource for watches and exact-version lists; a "
                        "watch from an older resourceVersion gets 410 Expired (default 10000)")
    p.add_argument("--bookmark-interval", type=float, default=60.0, metavar="SECONDS",
                   help="idle time after which a watch with allowWatchBookmarks=true gets a "
                        "BOOKMARK event (default 60)")
    p.add_argument("--no-endpointslice-controller", action="store_true",
                   help="do not run the in-process stand-in for kube-controller-manager's "
                        "EndpointSlice controller")
    p.add_argument("--no-grace-expiry", action="store_true",
                   help="keep gracefully deleted Pods until a DELETE with gracePeriodSeconds=0 "
                        "(what kube-apiserver itself does); by default they are removed when "
                        "their grace period runs out, standing in for the kubelet")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser().error("--tls-cert and --tls-key go together")
    host, port = args.listen
    server = KubeApiServer(
        host, port, tls_cert=args.tls_cert, tls_key=args.tls_key, tokens_file=args.tokens,
        service_cluster_ip_range=args.service_cluster_ip_range,
        service_node_port_range=args.service_node_port_range,
        advertise_address=args.advertise_address, request_log=args.request_log,
        watch_history=args.watch_history, bookmark_interval=args.bookmark_interval,
        endpointslice_controller=not args.no_endpointslice_controller,
        expire_graceful_deletions=not args.no_grace_expiry)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    signal.signal(signal.SIGUSR1, lambda *_: print(
        f"watches dropped: {server.drop_watches()} ended; watch requests get 429 until "
        "SIGUSR2", flush=True))
    signal.signal(signal.SIGUSR2, lambda *_: print(
        f"watches resumed: history begins at resourceVersion {server.resume_watches()}",
        flush=True))
    server.start()
    print(server.url, flush=True)
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
