# Shared by scripts/test, scripts/setup-peers, scripts/demo and bench/run.sh (source it).
# Sets ROOT (the repository root) and provides small helpers; installs only what is missing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
PEERS="$ROOT/tests/peers"
RUN_DIR="$ROOT/.run"

log() { echo "[$(basename "$0")] $*" >&2; }
die() { log "error: $*"; exit 1; }

# as_root CMD...: runs CMD as root (directly when we are root, else through sudo).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

_APT_UPDATED=""
# apt_install PACKAGE...: installs the Debian packages that are not installed yet.
apt_install() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing Debian packages: ${missing[*]}"
  if [[ -z "$_APT_UPDATED" ]]; then
    as_root apt-get update -qq
    _APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# need_cmd CMD PACKAGE: installs PACKAGE when CMD is not on PATH.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}

# free_port: prints a TCP port on 127.0.0.1 that is free right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL SECONDS: waits until URL answers (any HTTP status); fails after SECONDS.
wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  until curl -s -o /dev/null "$url"; do
    ((SECONDS < deadline)) || die "$url did not answer within $2 s"
    sleep 0.2
  done
}

# stamp_fresh STAMP INPUT...: true when STAMP exists and is newer than every INPUT.
stamp_fresh() {
  local stamp=$1 input
  shift
  [[ -e "$stamp" ]] || return 1
  for input in "$@"; do
    [[ "$input" -nt "$stamp" ]] && return 1
  done
  return 0
}
