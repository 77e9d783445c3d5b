#!/usr/bin/env bash
# Build one chapter alone, with the project's strict Jupyter Book settings, into a scratch directory.
#   tools/build_chapter.sh book/zoo.md [preset]      (preset: tiny by default; default = the committed zoo)
# Prints the path of the rendered page; exits non-zero if any cell fails or Sphinx warns.
set -euo pipefail
chapter=${1:?usage: tools/build_chapter.sh book/<chapter>.md [preset]}
preset=${2:-tiny}
root=$(cd "$(dirname "$0")/.." && pwd)
name=$(basename "$chapter" .md)
out=${BUILD_CHAPTER_DIR:-/tmp/build_chapter}/$name-$preset
rm -rf "$out" && mkdir -p "$out/book"
cp "$root/_config.yml" "$out/"
cp "$root/$chapter" "$out/book/"
[ -f "$root/book/references.bib" ] && cp "$root/book/references.bib" "$out/book/" || true
ln -s "$root/_mathjax" "$out/_mathjax"
ln -s "$root/_css" "$out/_css"
printf 'format: jb-book\nroot: book/%s\n' "$name" > "$out/_toc.yml"
HYDRALIB_PRESET=$preset "$root/.venv/bin/jupyter-book" build "$out" -W -n --keep-going
echo "$out/_build/html/book/$name.html"
