#!/usr/bin/env bash
# Refresh the web chat's vendored libraries (r1kit/serve/web/vendor/) from the npm registry:
#   tools/update_web_vendor.sh                 # latest versions
#   tools/update_web_vendor.sh katex@0.16.22   # pin any of them (npm package specs)
# Needs node/npm. Copies each package's browser build and its licence; KaTeX keeps only the
# woff2 fonts (every browser that runs the page's JS modules reads woff2; the CSS lists woff2
# first, so the woff/ttf entries are never fetched). VERSIONS records what was copied.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=r1kit/serve/web/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkgs=(markdown-it katex @highlightjs/cdn-assets dompurify markdown-it-texmath)
(cd "$tmp" && npm init -y >/dev/null && npm install --no-audit --no-fund --silent "${pkgs[@]}" "$@")
nm=$tmp/node_modules
rm -rf "$dest"
mkdir -p "$dest"/{markdown-it,katex/fonts,highlight,dompurify,texmath}
cp "$nm/markdown-it/dist/browser/markdown-it.umd.min.js" "$dest/markdown-it/markdown-it.min.js"
cp "$nm/markdown-it/LICENSE" "$dest/markdown-it/"
cp "$nm/katex/dist/katex.min.js" "$nm/katex/dist/katex.min.css" "$nm/katex/LICENSE" "$dest/katex/"
cp "$nm"/katex/dist/fonts/*.woff2 "$dest/katex/fonts/"
hl=$nm/@highlightjs/cdn-assets
cp "$hl/highlight.min.js" "$hl/LICENSE" "$dest/highlight/"
cp "$hl/styles/github.min.css" "$hl/styles/github-dark.min.css" "$dest/highlight/"
cp "$nm/dompurify/dist/purify.min.js" "$nm/dompurify/LICENSE" "$dest/dompurify/"
cp "$nm/markdown-it-texmath/texmath.js" "$dest/texmath/"
cp "$nm/markdown-it-texmath/license.txt" "$dest/texmath/LICENSE"
for p in "${pkgs[@]}"; do
  node -e "const p=require('$nm/$p/package.json'); console.log(p.name + '@' + p.version + ' ' + p.license)"
done >"$dest/VERSIONS"
cat "$dest/VERSIONS"
