#!/usr/bin/env bash
# Regenerate requirements.lock: every dependency of icu-backdoor[dev] pinned to the version, with
# sha256 hashes, for CPython 3.11 on Linux x86_64 with the CPU build of torch.
#
#   bash scripts/lock.sh           # rewrite requirements.lock (keeps existing pins where still valid)
#   bash scripts/lock.sh --upgrade # re-resolve everything to the newest allowed versions
#   bash scripts/lock.sh --check   # exit 1 if requirements.lock no longer matches pyproject.toml
#
# The CPU torch wheel comes from a local wheel folder when one holds it (LOCAL_WHEELS, default
# /opt/wheels: offline machines), otherwise from the PyTorch CPU index (uv --torch-backend cpu).
# Both are the same file: torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl has the same sha256
# in /opt/wheels and on download.pytorch.org/whl/cpu.
# Needs uv (pinned below); installed into a throw-away venv when not on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
LOCK=requirements.lock
LOCAL_WHEELS=${LOCAL_WHEELS:-/opt/wheels}
mode="write"
extra=()
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --upgrade) extra+=(--upgrade) ;;
  *) echo "usage: $0 [--check|--upgrade]" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

UV=${UV:-uv}
if ! command -v "$UV" >/dev/null 2>&1 || [[ "$("$UV" --version)" != "uv $UV_VERSION"* ]]; then
  python3 -m venv "$tmp/uv-venv"
  "$tmp/uv-venv/bin/python" -m pip install -q "uv==$UV_VERSION"
  UV="$tmp/uv-venv/bin/uv"
fi

if compgen -G "$LOCAL_WHEELS/torch-*+cpu-cp311-*manylinux*_x86_64.whl" >/dev/null; then
  torch_source=(--find-links "$LOCAL_WHEELS" --no-emit-find-links)
else
  torch_source=(--torch-backend cpu)
fi

# uv reads the pins already in the output file and keeps them unless --upgrade is given.
[[ -f "$LOCK" ]] && cp "$LOCK" "$tmp/body.txt"
"$UV" pip compile pyproject.toml --extra dev \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --generate-hashes --no-emit-index-url \
  "${torch_source[@]}" "${extra[@]}" \
  --custom-compile-command "bash scripts/lock.sh" \
  --quiet -o "$tmp/body.txt"

{
  cat <<'HEADER'
# requirements.lock: icu-backdoor[dev] for CPython 3.11 on Linux x86_64, CPU torch; exact versions
# and sha256 hashes. Generated, never edit by hand. Regenerate: bash scripts/lock.sh
# Install:  pip install -r requirements.lock && pip install --no-deps -e .
# torch==X+cpu is served by the PyTorch CPU index below (the same wheel on an offline machine may
# sit in a pip --find-links folder). Other platforms: see docs/install.md.
--extra-index-url https://download.pytorch.org/whl/cpu

HEADER
  # drop uv's own header lines up to the first blank line after them, keep the rest
  awk 'BEGIN{body=0} body{print; next} /^[a-z0-9]/{body=1; print}' "$tmp/body.txt"
} > "$tmp/new.lock"

pins() { grep -E '^[A-Za-z0-9._-]+==' "$1" | sed 's/ .*//' | sort; }
if [[ $mode == check ]]; then
  if diff <(pins "$LOCK") <(pins "$tmp/new.lock"); then
    echo "$LOCK is in sync with pyproject.toml"
  else
    echo "$LOCK is out of date: run bash scripts/lock.sh and commit it" >&2
    exit 1
  fi
else
  mv "$tmp/new.lock" "$LOCK"
  echo "wrote $LOCK ($(pins "$LOCK" | wc -l) packages)"
fi
