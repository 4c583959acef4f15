# The local stand-in for python:3.11-slim-bookworm, for building deploy/images/*.Dockerfile
# with a real engine where no registry is reachable (tests/cluster/kpcluster/enginebuild.py).
# Build context: the directory holding the debootstrap layer (bookworm minbase + python3 3.11
# + python3-pip) that kpcluster/imagebuild.py makes, and the machine's CA bundle.
FROM scratch
ADD layer.tar /
# The machine's trust store, as its Debian mirror is the machine's: a machine may reach PyPI
# only through a TLS proxy with its own CA (the CI machine does), and Debian's pip reads this
# bundle.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# Shaped like the slim image the Dockerfiles are written for: python and pip in /usr/local/bin
# (first on PATH) and no PEP 668 marker, since the slim image's python is not Debian's. The
# Dockerfiles then need nothing but `--build-arg BASE=`.
RUN rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3 /usr/local/bin/python3 \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip3 \
    && ln -s /usr/bin/pip3 /usr/local/bin/pip \
    && python3 --version && pip --version
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python3"]
