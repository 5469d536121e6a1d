#!/bin/sh
# The load balancer's entrypoint: render the configuration's addresses, switch TLS on when
# certificates are given, then run nginx in the foreground.
#
# TLS is on when $LB_TLS_DIR (default /etc/rnn-sentiment/tls, a read-only mount in
# docker-compose.tls.yml) holds tls.crt and tls.key (PEM; tls.crt may carry the chain);
# mutual TLS as well when it also holds client-ca.crt. Half a pair is an error, not plaintext.
# Every path is a variable so that the system tests run this very script under a temporary prefix.
set -eu
config_dir="${NGINX_CONFIG_DIR:-/etc/rnn-sentiment/nginx}"
prefix="${NGINX_PREFIX:-/tmp/nginx}"
tls_dir="${LB_TLS_DIR:-/etc/rnn-sentiment/tls}"

"${RENDER_ADDRESSES:-render-addresses}" "$config_dir" "$prefix"
rm -rf "$prefix/tls.d" "$prefix/certs"
mkdir -p "$prefix/tls.d"
if [ -f "$tls_dir/tls.crt" ] && [ -f "$tls_dir/tls.key" ]; then
    ln -s "$tls_dir" "$prefix/certs"
    cp "$prefix/tls/listen-tls.conf" "$prefix/tls.d/"
    if [ -f "$tls_dir/client-ca.crt" ]; then
        cp "$prefix/tls/verify-clients.conf" "$prefix/tls.d/"
        echo "lb: TLS on, client certificates required (mutual TLS)" >&2
    else
        echo "lb: TLS on" >&2
    fi
elif [ -e "$tls_dir/tls.crt" ] || [ -e "$tls_dir/tls.key" ]; then
    echo "lb: $tls_dir holds only one of tls.crt and tls.key: give both, or neither for plaintext" >&2
    exit 2
fi
exec "${NGINX:-nginx}" -p "$prefix/" -e stderr -c "$prefix/nginx.conf" -g 'daemon off;'
