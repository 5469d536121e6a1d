#!/bin/sh
# Copy a directory of configuration files, replacing default addresses with the ones this
# deployment uses. The committed files (nginx.conf, prometheus.yml) name the docker-compose
# defaults and are valid as they are; docker-compose passes the mapping in ADDRESS_MAP:
#   ADDRESS_MAP="127.0.0.1:50052=10.0.0.7:50051 127.0.0.1:9465=10.0.0.7:9464"
#   render-addresses.sh SRC_DIR DST_DIR
# POSIX sh and sed: runs in any image.
set -eu
src="$1"
dst="$2"
mkdir -p "$dst"
cp -R "$src"/. "$dst"/
# Two passes through placeholders, so that one pair's new address is never rewritten again by
# another pair whose default it happens to equal.
to_placeholders=""
from_placeholders=""
n=0
for pair in ${ADDRESS_MAP:-}; do
    from="${pair%%=*}"
    to="${pair#*=}"
    case "$to" in
        "" | *[!A-Za-z0-9_.:\[\]-]*) echo "render-addresses: refusing address '$to' in '$pair'" >&2; exit 2 ;;
    esac
    n=$((n + 1))
    from_re="$(printf '%s' "$from" | sed 's/[.[\]*^$]/\\&/g')"
    # Whole addresses only: 127.0.0.1:9465 must not rewrite 127.0.0.1:94650.
    to_placeholders="$to_placeholders s|$from_re\\([^0-9]\\)|@ADDRESS_$n@\\1|g; s|$from_re\$|@ADDRESS_$n@|g;"
    from_placeholders="$from_placeholders s|@ADDRESS_$n@|$to|g;"
done
if [ "$n" -gt 0 ]; then
    find "$dst" -type f \( -name '*.conf' -o -name '*.yml' -o -name '*.yaml' \) \
        -exec sed -i -e "$to_placeholders" -e "$from_placeholders" {} +
fi
