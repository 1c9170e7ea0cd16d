#!/usr/bin/env bash
# Everything a fresh machine needs for scratchnet: the Fashion-MNIST files
# (Debian's dataset-fashion-mnist, when we are root and they are missing), a C
# compiler (likewise), torch and torchvision, and scratchnet itself with its test
# tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: Fashion-MNIST not installed and not root; tests that need it will skip" >&2
    fi
fi

# a C compiler for scratchnet/native's loops (without one the fast step takes its
# torch fallbacks and the tests of those loops skip)
if ! command -v cc >/dev/null && ! command -v gcc >/dev/null && ! command -v clang >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq gcc >/dev/null
    else
        echo "setup: no C compiler; scratchnet's C loops fall back to torch ops" >&2
    fi
fi

# torch 2.14.1 + torchvision 0.29.1 is the pair that installs here (from local disk);
# elsewhere any torch>=2.4 with its matching torchvision works.
python -m pip install -q torch==2.14.1 torchvision==0.29.1 -e '.[dev]'
