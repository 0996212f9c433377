# The Debian package: `deploy/build-deb.sh` configures a build with
# -DCMAKE_INSTALL_PREFIX=/usr and runs `cpack -G DEB` on it. One package,
# cachefiles-ondemand, with everything `cmake --install` lays out (the
# programs, the unit, the example config as a conffile, the worker's
# sysusers.d file) and the maintainer scripts in deploy/debian/.
set(ONDEMAND_PACKAGE_RELEASE "1" CACHE STRING "Debian revision of the package (the part after the last -)")
set(ONDEMAND_PACKAGE_MAINTAINER "cachefiles-ondemand developers <root@localhost>" CACHE STRING
    "Maintainer: field of the package")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cachefiles-ondemand)
# The version the binaries report (proto/channel.h VERSION), so `dpkg -s`
# and `ondemandctl status` agree; ONDEMAND_VERSION_SUFFIX makes a second
# build (the package upgrade test: 0.1.0+2 sorts after 0.1.0).
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}${ONDEMAND_VERSION_SUFFIX}")
set(CPACK_DEBIAN_PACKAGE_RELEASE ${ONDEMAND_PACKAGE_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_CONTACT "${ONDEMAND_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${ONDEMAND_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "cachefiles on-demand daemon for lazily loaded EROFS images")
# The synopsis is the summary; CPack indents each line of the body.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "ondemand-supervisor holds /dev/cachefiles and runs a restartable,
sandboxed ondemand-worker that serves EROFS-over-fscache mounts from
local blobs or an OCI registry. A worker that crashes, hangs or is
upgraded is replaced while the mounts keep reading.")
# Depends: from dpkg-shlibdeps on the installed programs (libc6, libfmt9,
# libspdlog1.10, libcurl4, libsystemd0, libseccomp2, ...).
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The postinst creates the worker's user with systemd-sysusers when it is
# there (else useradd) and drives the unit with systemctl.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS systemd)
set(CPACK_STRIP_FILES ON)

# Maintainer scripts, with this build's paths.
set(ONDEMAND_CTL_PATH ${CMAKE_INSTALL_FULL_BINDIR}/ondemandctl)
set(ONDEMAND_SYSUSERS_FILE ${CMAKE_INSTALL_PREFIX}/${ONDEMAND_SYSUSERS_DIR}/ondemand.conf)
# The directories the scripts create and purge are the shipped config's,
# read from it (one place says them: deploy/ondemand.json).
file(READ ${CMAKE_CURRENT_SOURCE_DIR}/ondemand.json ONDEMAND_EXAMPLE_CONFIG)
string(JSON ONDEMAND_BLOB_DIR GET "${ONDEMAND_EXAMPLE_CONFIG}" blob_dir)
string(JSON ONDEMAND_CACHE_DIR GET "${ONDEMAND_EXAMPLE_CONFIG}" cache_dir)
# The unit's CacheDirectory=ondemand makes systemd create /var/cache/ondemand.
if(NOT ONDEMAND_CACHE_DIR STREQUAL "/var/cache/ondemand")
  message(FATAL_ERROR "deploy/ondemand.json: cache_dir ${ONDEMAND_CACHE_DIR} is not the unit's "
          "CacheDirectory= (/var/cache/ondemand): change both")
endif()
foreach(script postinst prerm postrm)
  configure_file(${CMAKE_CURRENT_SOURCE_DIR}/debian/${script}.in ${CMAKE_CURRENT_BINARY_DIR}/debian/${script} @ONLY)
endforeach()
# The example config is the one conffile: dpkg keeps an operator's edits
# across upgrades and removes it only on purge.
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/debian/conffiles "${ONDEMAND_CONFIG_PATH}\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_CURRENT_BINARY_DIR}/debian/postinst
    ${CMAKE_CURRENT_BINARY_DIR}/debian/prerm
    ${CMAKE_CURRENT_BINARY_DIR}/debian/postrm
    ${CMAKE_CURRENT_BINARY_DIR}/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
