# Sourced by the benchmark scripts (benches/pgo.sh, lb-proxy/benches/l4_compare.sh and
# http_vs_haproxy.sh): the nginx backend they all measure against.
#
# nginx_1k_conf DIR LISTEN... writes DIR/www/1k (1 KiB of 'x') and DIR/nginx.conf: one
# worker, no access log, keep-alive without a request limit (1 000 000 per connection), one
# `server` per LISTEN (an nginx listen argument such as "127.0.0.1:8080" or
# "127.0.0.1:8080 http2") serving DIR/www. Start it with
#   taskset -c 0 nginx -c DIR/nginx.conf -g 'daemon off;'
nginx_1k_conf() {
    local dir=$1 listen
    shift
    chmod 755 "$dir"
    mkdir -p "$dir/www"
    head -c 1024 /dev/zero | tr '\0' 'x' >"$dir/www/1k"
    {
        printf 'worker_processes 1;\npid %s/nginx.pid;\nerror_log %s/nginx.err warn;\n' "$dir" "$dir"
        printf 'events { worker_connections 8192; }\nhttp {\n    access_log off;\n'
        printf '    keepalive_requests 1000000;\n    keepalive_timeout 75s;\n'
        printf '    client_body_temp_path %s/body; proxy_temp_path %s/proxy;\n' "$dir" "$dir"
        printf '    fastcgi_temp_path %s/fcgi; uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;\n' "$dir" "$dir" "$dir"
        for listen in "$@"; do
            printf '    server { listen %s; root %s/www; }\n' "$listen" "$dir"
        done
        printf '}\n'
    } >"$dir/nginx.conf"
}
