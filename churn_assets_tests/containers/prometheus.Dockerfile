# Stand-ins for prom/prometheus and prom/alertmanager that the container test builds from
# Debian's packages: the binaries where the official images have them (/bin/prometheus,
# /bin/alertmanager), their storage folders, busybox's wget for the health checks.
FROM churn-test/debian:bookworm AS prometheus
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus prometheus-alertmanager wget \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/prometheus-alertmanager /usr/bin/alertmanager \
    && mkdir -p /prometheus /alertmanager \
    && chown nobody:nogroup /prometheus /alertmanager
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]

FROM prometheus AS alertmanager
EXPOSE 9093
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
