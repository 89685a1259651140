# The step's container image: a release build, then a minimal runtime (glibc, CA certificates) with the
# binary as ENTRYPOINT. Both base images are build arguments, so a machine without a registry can build
# from locally made bases. A binary built elsewhere (CI, the tests) may be put in the context as
# prebuilt/ecr-step; the build stage then copies it instead of compiling.
ARG BUILDER_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN if [ -x prebuilt/ecr-step ]; then cp prebuilt/ecr-step /ecr-step; \
    else cargo build --release --locked --bin ecr-step && cp target/release/ecr-step /ecr-step; fi

FROM ${RUNTIME_IMAGE}
COPY --from=build /ecr-step /usr/local/bin/ecr-step
ENTRYPOINT ["/usr/local/bin/ecr-step"]
