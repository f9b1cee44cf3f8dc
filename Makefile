# Bootstraps blockmover on a fresh Debian machine, as root: the system
# packages it drives, a virtual environment, the package itself.

VENV ?= .venv
PYTHON ?= python3
SYSTEM_PACKAGES = e2fsprogs util-linux xfsprogs iproute2 procps kmod psmisc mount \
                  etcd-server

.PHONY: demo test system venv clean

demo: venv
	$(VENV)/bin/blockmover demo

test: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: system $(VENV)/.installed

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
