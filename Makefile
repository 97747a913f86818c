# ovn-k8s-underlay: `make demo` and `make test` install what they need on a fresh
# Debian 12 machine (Debian packages, then a venv) before they run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
DEB_PACKAGES := openvswitch-switch ovn-central ovn-host iproute2 ethtool iputils-ping nftables \
	busybox-static containernetworking-plugins podman runc containerd \
	neutron-common mariadb-server-core mariadb-client-core gcc libc6-dev
# Octavia with its OVN provider for the Neutron lab (lab/octavia.py), without the recommended
# packages (35 packages instead of hundreds).
OCTAVIA_PACKAGES := octavia-api octavia-driver-agent python3-ovn-octavia-provider
PYTEST_ARGS ?=
CC ?= cc
NATIVE_SHIM := src/ovn_underlay/cni/ovn-underlay-cni-shim

.PHONY: all deps debian-deps venv demo test lint unit e2e clean lab-down bench demo-neutron demo-standalone

all: test

deps: debian-deps venv $(NATIVE_SHIM)

# The CNI binary's native front (see its header); node-init --install-cni uses it when built.
# Linked statically: installed on a host (cni/host_install.py), it needs none of its libraries.
$(NATIVE_SHIM): src/ovn_underlay/cni/shim.c
	$(CC) -O2 -static -Wall -Wextra -Werror -o $@ $<

# Installs only the Debian packages that are missing (apt lists refreshed first).
debian-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@missing=""; for p in $(OCTAVIA_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (no recommends):$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The Kubernetes way: the test API server, the cluster controller and a node agent per VM
# (the entry points of deploy/'s manifests), Pods as API objects on containerd.
demo: deps
	$(BIN)/ovn-k8s-underlay lab --name demo demo --kube

# The seed's way: node-init and lswitch-setup typed on each VM, pods added through CNI.
demo-standalone: deps
	$(BIN)/ovn-k8s-underlay lab --name standalone demo

# The Kubernetes way through a real neutron-server (ML2/OVN, its own MariaDB) and Octavia
# (its OVN provider) in the lab: the Service is an Octavia load balancer. The standalone
# Neutron demo (node-init and lswitch-setup on each VM) is `ovn-k8s-underlay lab demo --neutron`.
demo-neutron: deps
	$(BIN)/ovn-k8s-underlay lab --name neutron demo --neutron --kube

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

unit: venv
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

test: deps lint
	$(BIN)/pytest $(PYTEST_ARGS)

# CNI call latency against the reference plugins, pool set-up time, Pods through the API
# on containerd, Services (programming latency, 1000 Services at scale), each on a lab of
# its own, and one Service's sync among many on an NB of its own; tables on stdout, JSON in
# bench/results/.
bench: deps
	$(BIN)/python bench/cni_latency.py
	$(BIN)/python bench/pool_setup.py
	$(BIN)/python bench/pod_ready.py
	$(BIN)/python bench/services.py
	$(BIN)/python bench/ovn_lb_sync.py

lab-down: venv
	$(BIN)/ovn-k8s-underlay lab --name demo down

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache $(NATIVE_SHIM)
