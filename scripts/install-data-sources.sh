#!/usr/bin/env bash
# Install what `boom-merge data build` reads, on Debian 12 as root; safe to run again.
#   apt: WordNet, FOLDOC, Devil's Dictionary, man pages (+ groff), KJV and WEB Bibles, Python docs,
#        and the out-of-domain dev sources: Jargon File, VERA, GCIDE
#   pip: pysword (reads the SWORD Bible modules)
#   cache: the gensim wheel holding WordSim-353 (read with zipfile; gensim is not installed)
# PYTHON picks the interpreter (default: python, else python3).
set -euo pipefail

APT_PACKAGES=(
  wordnet-base dict-foldoc dict-devil dict-jargon dict-vera dict-gcide
  man-db groff-base manpages manpages-dev
  sword-text-kjv sword-text-web
  python3-doc
)
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
CACHE="${BOOM_MERGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/boom-merge}"

# Slim images tell dpkg to drop /usr/share/man and /usr/share/doc: lift those rules and
# reinstall, or the man pages and the Python FAQ would be missing.
reinstall=()
for cfg in /etc/dpkg/dpkg.cfg.d/*; do
  [ -f "$cfg" ] || continue
  if grep -Eq '^path-exclude=?[[:space:]]*/usr/share/(man|doc)' "$cfg"; then
    echo "install-data-sources: allowing /usr/share/man and /usr/share/doc in $cfg"
    sed -i -E 's@^(path-exclude=?[[:space:]]*/usr/share/(man|doc)/)@# boom-merge: \1@' "$cfg"
    reinstall=(--reinstall)
  fi
done

apt_missing() {  # true when a package is not fully installed
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" = "install ok installed" ] || return 0
  done
  return 1
}

# Nothing missing and nothing to reinstall: no apt call (a set-up machine needs no mirror).
if [ ${#reinstall[@]} -gt 0 ] || apt_missing; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${reinstall[@]}" "${APT_PACKAGES[@]}"
fi

"$PYTHON" -m pip install -q "pysword>=0.2.8"

mkdir -p "$CACHE/downloads"
if ! ls "$CACHE/downloads"/gensim-*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip download -q gensim --no-deps --only-binary=:all: -d "$CACHE/downloads"
fi

if command -v boom-merge >/dev/null; then boom-merge data list; fi
