# Installing Edgepin beyond its two binaries (lb/ and node-proxy/ install
# those), and the Debian package built from the same install rules:
#
#   cmake --install build --prefix /usr     # the package layout, by hand
#   cd build && cpack -G DEB                # edgepin_<version>-1_<arch>.deb
#
# Layout (prefix /usr; another prefix moves everything but keeps it
# consistent, e.g. /usr/local/etc/edgepin and units naming /usr/local/bin):
#   /usr/bin/edgepin-lb, /usr/bin/edgepin-node-proxy
#   /etc/edgepin/{cluster,lb,node-proxy}.json, README.md   (examples; conffiles)
#   /usr/lib/systemd/system/edgepin-lb.service, edgepin-node-proxy@.service
#   /usr/lib/sysusers.d/edgepin.conf
#   /usr/lib/systemd/system/edgepin-{lb,node-proxy}-config*.{path,service}
#   /usr/share/doc/edgepin/README.md, DEPLOY.md, ha/ (keepalived files)
include(GNUInstallDirs)
include(${CMAKE_CURRENT_LIST_DIR}/InstallLayout.cmake)

option(EDGEPIN_INSTALL_SYSTEMD "Install the systemd units and the sysusers.d file" ON)
set(EDGEPIN_SYSTEMD_UNITDIR "lib/systemd/system" CACHE STRING
    "systemd system unit directory (relative to the install prefix, or absolute)")
set(EDGEPIN_SYSUSERSDIR "lib/sysusers.d" CACHE STRING
    "sysusers.d directory (relative to the install prefix, or absolute)")
set(EDGEPIN_PACKAGE_MAINTAINER "Edgepin maintainers <maintainers@edgepin.invalid>" CACHE STRING
    "Maintainer field of the Debian package")

install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${PROJECT_SOURCE_DIR}/deploy/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR}
        RENAME DEPLOY.md)
# The keepalived pair of DEPLOY.md ("High availability"), to copy to
# /etc/keepalived on the lb hosts.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/ha/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/ha
        USE_SOURCE_PERMISSIONS)

# Configuration directory and units: placed by InstallLayout.cmake when the
# install runs, once the prefix is known.
install(CODE "
  include(\"${CMAKE_CURRENT_LIST_DIR}/InstallLayout.cmake\")
  edgepin_install_layout(
    SOURCE_DIR \"${PROJECT_SOURCE_DIR}\" BINARY_DIR \"${PROJECT_BINARY_DIR}\"
    BINDIR \"${CMAKE_INSTALL_BINDIR}\" SYSCONFDIR \"${CMAKE_INSTALL_SYSCONFDIR}\"
    DOCDIR \"${CMAKE_INSTALL_DOCDIR}\" UNITDIR \"${EDGEPIN_SYSTEMD_UNITDIR}\"
    SYSUSERSDIR \"${EDGEPIN_SYSUSERSDIR}\" SYSTEMD \"${EDGEPIN_INSTALL_SYSTEMD}\")
")

# --- Debian package (CPack DEB) ---
# The DEB generator installs through DESTDIR into its staging directory with
# the prefix below, so the configuration directory is /etc/edgepin.
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "edgepin")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_VENDOR "Edgepin")
set(CPACK_PACKAGE_CONTACT "${EDGEPIN_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "two-tier HTTPS edge with session affinity, TLS terminated on the nodes")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "Edgepin keeps every user of a session-bound HTTPS application (such as a\n"
    "legacy Tomcat application with in-memory sessions) on one backend while\n"
    "TLS is terminated only on the backend hosts.\n"
    "\n"
    "edgepin-lb runs on the edge host: a TCP balancer that reads TLS hellos\n"
    "without decrypting (it holds no keys), routes resuming clients to the node\n"
    "that issued their session and passes the client address with PROXY v2.\n"
    "edgepin-node-proxy@NODE runs beside each Tomcat: it terminates TLS, parses\n"
    "HTTP/1.1 strictly, writes true X-Forwarded-* headers and relays requests\n"
    "to the node that owns their session.\n"
    "\n"
    "No service is enabled or started on installation.")
string(REPLACE ";" "" CPACK_DEBIAN_PACKAGE_DESCRIPTION "${CPACK_DEBIAN_PACKAGE_DESCRIPTION}")
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
set(CPACK_DEBIAN_PACKAGE_RELEASE "1")
set(CPACK_DEBIAN_FILE_NAME "DEB-DEFAULT")
# Library dependencies come from dpkg-shlibdeps (package dpkg-dev); adduser
# is for postinst. Tomcat is not a dependency: the lb host has none, and a
# node's Tomcat may come from anywhere.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "tomcat10")
set(CPACK_STRIP_FILES ON)

# Maintainer scripts, and the conffiles list so that dpkg keeps an operator's
# edited /etc/edgepin files on upgrade.
edgepin_full_sysconfdir("${CPACK_PACKAGING_INSTALL_PREFIX}" "${CMAKE_INSTALL_SYSCONFDIR}" _edgepin_pkg_sysconfdir)
set(_edgepin_conffiles "")
foreach(_name IN LISTS EDGEPIN_CONFIG_FILES)
  string(APPEND _edgepin_conffiles "${_edgepin_pkg_sysconfdir}/edgepin/${_name}\n")
endforeach()
file(WRITE ${PROJECT_BINARY_DIR}/edgepin-install/debian/conffiles "${_edgepin_conffiles}")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/edgepin-install/debian/conffiles
    ${PROJECT_SOURCE_DIR}/deploy/debian/postinst
    ${PROJECT_SOURCE_DIR}/deploy/debian/prerm
    ${PROJECT_SOURCE_DIR}/deploy/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)

include(CPack)
