# The step's container image: a release build, then a final stage FROM scratch holding only the binary, the
# dynamic loader and the shared libraries it links (as the loader itself lists them), the CA certificates
# and an empty /tmp. Nothing is pulled for the final stage, so the image measured in tests is the image
# shipped. The builder is a build argument, so a machine without a registry can build from a locally made
# base (it needs sh, cp, mkdir and the CA bundle). A binary built elsewhere (CI, the tests) may be put in
# the context as prebuilt/ecr-step; the build stage then copies it instead of compiling. `--target shell`
# builds the variant with a static busybox as /bin/sh, for CIs that need a shell in the job's image.
ARG BUILDER_IMAGE=rust:1.95-slim-bookworm

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN if [ -x prebuilt/ecr-step ]; then cp prebuilt/ecr-step /ecr-step; \
    else cargo build --release --locked --bin ecr-step && cp target/release/ecr-step /ecr-step; fi
# The runtime files: the loader lists what the binary links (`ld.so --list`, what ldd runs), one per line,
# as `name => /path (address)` or `/path (address)`; every absolute path is copied under /rootfs.
RUN set -e; \
    loader=$(for l in /lib64/ld-linux-x86-64.so.2 /lib/ld-linux-aarch64.so.1; do [ -e "$l" ] && echo "$l" && break; done); \
    mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/tmp; \
    "$loader" --list /ecr-step > /libs.txt; \
    while read -r first second third rest; do \
      for path in "$first" "$third"; do \
        case "$path" in /*) mkdir -p "/rootfs${path%/*}"; cp "$path" "/rootfs$path";; esac; \
      done; \
    done < /libs.txt; \
    cp /ecr-step /rootfs/usr/local/bin/ecr-step; \
    cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt
# A shell for CIs that run a job's script in the step's image (GitLab's docker and Kubernetes executors):
# Debian's busybox-static, one static binary, as /bin/sh. Only the `shell` stage gets it.
RUN set -e; \
    [ -x /bin/busybox ] || { apt-get update -qq && apt-get install -y -qq busybox-static; }; \
    mkdir -p /shell/bin; cp /bin/busybox /shell/bin/busybox; \
    for tool in sh env cat; do /bin/busybox ln -s busybox "/shell/bin/$tool"; done

# The variant with a shell, tagged `<version>-shell`: what the GitLab component runs.
FROM scratch AS shell
COPY --from=build /rootfs/ /
COPY --from=build /shell/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/usr/local/bin/ecr-step"]

# The default image: no shell at all.
FROM scratch
COPY --from=build /rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/usr/local/bin/ecr-step"]
