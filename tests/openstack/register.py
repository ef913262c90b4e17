"""What start.sh registers in the test OpenStack, through openstacksdk (one process, not a CLI
call per object).

  register.py services            service users, the catalog's services and endpoints
  register.py resources RUN_DIR   flavor, image, networks, router (for floating IPs)
  register.py compute-ready       exits 0 once the fake compute node is a hypervisor
"""

import sys

import openstack

SERVICES = [
    # name, type, port, path
    ("nova", "compute", 8774, "/v2.1"),
    ("placement", "placement", 8778, ""),
    ("glance", "image", 9292, ""),
    ("neutron", "network", 9696, ""),
]


def connect():
    return openstack.connect(cloud="admin")


def services():
    conn = connect()
    identity = conn.identity
    project = identity.create_project(name="service", domain_id="default")
    admin_role = identity.find_role("admin")
    roles = [admin_role]
    service_role = identity.find_role("service") or identity.create_role(name="service")
    roles.append(service_role)
    for name, kind, port, path in SERVICES:
        user = identity.create_user(name=name, password="secret", domain_id="default")
        for role in roles:
            identity.assign_project_role_to_user(project, user, role)
        service = identity.create_service(name=name, type=kind)
        for interface in ("public", "internal", "admin"):
            identity.create_endpoint(
                service_id=service.id,
                interface=interface,
                url=f"http://127.0.0.1:{port}{path}",
                region_id="RegionOne",
            )


def resources(run_dir):
    conn = connect()
    conn.compute.create_flavor(name="m1.tiny", ram=64, vcpus=1, disk=1, id="1")
    conn.compute.create_flavor(name="m1.small", ram=128, vcpus=1, disk=1, id="2")
    image = conn.image.create_image(
        name="tiny", disk_format="raw", container_format="bare", data=b"\0" * 512,
        visibility="public",
    )
    conn.image.wait_for_status(image, status="active", wait=60)
    private = conn.network.create_network(name="private")
    private_subnet = conn.network.create_subnet(
        network_id=private.id, name="private", ip_version=4, cidr="10.0.0.0/24"
    )
    public = conn.network.create_network(
        name="public", is_router_external=True, provider_network_type="flat",
        provider_physical_network="public",
    )
    conn.network.create_subnet(
        network_id=public.id, name="public", ip_version=4, cidr="172.24.4.0/24",
        is_dhcp_enabled=False,
    )
    router = conn.network.create_router(
        name="router", external_gateway_info={"network_id": public.id}
    )
    conn.network.add_interface_to_router(router, subnet_id=private_subnet.id)
    project = conn.identity.find_project("admin")
    conn.set_compute_quotas(project.id, instances=20, cores=40, ram=40960)


def compute_ready():
    conn = connect()
    return any(True for _ in conn.compute.hypervisors())


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "services":
        services()
    elif what == "resources":
        resources(sys.argv[2])
    elif what == "compute-ready":
        sys.exit(0 if compute_ready() else 1)
    else:
        sys.exit(f"unknown step {what}")
