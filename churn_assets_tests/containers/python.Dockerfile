# The stand-in for python:3.11-slim that the container test builds from Debian's packages
# (no registry here): Python 3.11 with pip on PATH as `python` and `pip`, in a virtual
# environment under /usr/local/python. The machine's CA bundle is baked in so that pip reaches
# the package index through the machine's proxy; the images users pull need none of this.
FROM churn-test/debian:bookworm
ENV LANG=C.UTF-8 \
    PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local/python
COPY host-ca-certificates.crt /etc/ssl/certs/host-ca-certificates.crt
CMD ["python"]
