#!/usr/bin/env bash
# Installs what the multi-host test (tests/serving/test_multihost.py) needs: iproute2 and util-linux (network
# and PID namespaces), openssh-server and openssh-client (sshd on the "remote" host, ssh for pdsh), pdsh
# (DeepSpeed's multi-node runner). Run as root; idempotent, and a no-op when everything is there.
set -euo pipefail

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v pdsh >/dev/null 2>&1 || need+=(pdsh)
if [ ${#need[@]} -eq 0 ]; then
    echo "multi-host test: iproute2, openssh-server, pdsh already installed"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "multi-host test: installing ${need[*]} needs root (or: apt-get install ${need[*]})" >&2
    exit 1
fi

# The packages' install scripts must not start an sshd on this machine: the test starts its own, inside a
# namespace. policy-rc.d answering 101 ("not allowed") is Debian's way to say so; ours goes away afterwards.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
fi
trap '[ -z "$made_policy" ] || rm -f "$policy"' EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
echo "multi-host test: installed ${need[*]}"
