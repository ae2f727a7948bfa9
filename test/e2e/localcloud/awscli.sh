#!/usr/bin/env bash
# Drives localcloud with Debian's aws CLI (v2.9), the way a user would.
# Usage: awscli.sh ENDPOINT STATE_DIR
# The CLI v2.9 ignores AWS_ENDPOINT_URL, so every call passes --endpoint-url.
set -euo pipefail

endpoint=$1
state=$2
export AWS_SHARED_CREDENTIALS_FILE=$state/credentials
export AWS_CONFIG_FILE=$state/config
export AWS_PAGER=""
AWS=${AWS_CLI:-/usr/bin/aws}

aws() { "$AWS" --endpoint-url "$endpoint" --output json "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_error CODE cmd...: the command must fail with that AWS error code.
expect_error() {
	local code=$1 out
	shift
	if out=$("$@" 2>&1); then fail "expected $code, command succeeded: $*"; fi
	grep -q "($code)" <<<"$out" || fail "expected $code, got: $out"
	echo "ok: $code"
}
jqget() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }

who=$(aws sts get-caller-identity)
[ "$(jqget "['Account']" <<<"$who")" = 000000000000 ] || fail "account: $who"

vpc=$(aws ec2 create-vpc --cidr-block 10.20.0.0/16 | jqget "['Vpc']['VpcId']")
subnet=$(aws ec2 create-subnet --vpc-id "$vpc" --cidr-block 10.20.1.0/24 --availability-zone us-west-2a \
	--tag-specifications 'ResourceType=subnet,Tags=[{Key=kubernetes.io/role/cni,Value=1}]' | jqget "['Subnet']['SubnetId']")
aws ec2 describe-subnets --filters Name=tag:kubernetes.io/role/cni,Values=1 | grep -q "$subnet" || fail "subnet not found by tag"
echo "ok: vpc $vpc subnet $subnet"

run=$(aws ec2 run-instances --image-id ami-0123456789abcdef0 --instance-type m5.large --count 2 --subnet-id "$subnet" \
	--tag-specifications 'ResourceType=instance,Tags=[{Key=Name,Value=cli-node}]')
i1=$(jqget "['Instances'][0]['InstanceId']" <<<"$run")
i2=$(jqget "['Instances'][1]['InstanceId']" <<<"$run")
aws ec2 wait instance-running --instance-ids "$i1" "$i2"
echo "ok: instances $i1 $i2 running"

eni=$(aws ec2 create-network-interface --subnet-id "$subnet" --description cli-eni | jqget "['NetworkInterface']['NetworkInterfaceId']")
att=$(aws ec2 attach-network-interface --network-interface-id "$eni" --instance-id "$i1" --device-index 1 | jqget "['AttachmentId']")
aws ec2 modify-network-interface-attribute --network-interface-id "$eni" --attachment "AttachmentId=$att,DeleteOnTermination=true"
for _ in $(seq 50); do
	st=$(aws ec2 describe-network-interfaces --network-interface-ids "$eni" | jqget "['NetworkInterfaces'][0]['Attachment']['Status']")
	[ "$st" = attached ] && break
	sleep 0.2
done
[ "$st" = attached ] || fail "eni $eni stuck in $st"
echo "ok: eni $eni attached ($att)"

aws ec2 assign-private-ip-addresses --network-interface-id "$eni" --secondary-private-ip-address-count 5 >/dev/null
aws ec2 assign-private-ip-addresses --network-interface-id "$eni" --ipv4-prefix-count 1 >/dev/null
desc=$(aws ec2 describe-network-interfaces --network-interface-ids "$eni")
n=$(jqget "['NetworkInterfaces'][0]['PrivateIpAddresses'].__len__()" <<<"$desc")
p=$(jqget "['NetworkInterfaces'][0]['Ipv4Prefixes'].__len__()" <<<"$desc")
[ "$n" = 6 ] && [ "$p" = 1 ] || fail "want 6 addresses and 1 prefix, got $n and $p"
echo "ok: 5 secondary IPs and one /28 prefix"

# m5.large allows 10 IPv4 addresses per interface: 6 addresses + 1 prefix use 7 slots.
expect_error PrivateIpAddressLimitExceeded aws ec2 assign-private-ip-addresses --network-interface-id "$eni" --secondary-private-ip-address-count 4
# ...and 3 interfaces.
e2=$(aws ec2 create-network-interface --subnet-id "$subnet" | jqget "['NetworkInterface']['NetworkInterfaceId']")
e3=$(aws ec2 create-network-interface --subnet-id "$subnet" | jqget "['NetworkInterface']['NetworkInterfaceId']")
aws ec2 attach-network-interface --network-interface-id "$e2" --instance-id "$i1" --device-index 2 >/dev/null
expect_error AttachmentLimitExceeded aws ec2 attach-network-interface --network-interface-id "$e3" --instance-id "$i1" --device-index 3
expect_error InvalidNetworkInterfaceID.NotFound aws ec2 describe-network-interfaces --network-interface-ids eni-00000000000000000
expect_error MissingParameter aws ec2 create-subnet --vpc-id "$vpc" --cidr-block ""

aws ec2 describe-network-interfaces --filters "Name=attachment.instance-id,Values=$i1" | grep -q "$e2" || fail "filter by instance"
echo "ok: describe with filters"

fs=$(aws efs create-file-system --creation-token cli-fs --tags Key=Name,Value=cli | jqget "['FileSystemId']")
for _ in $(seq 50); do
	st=$(aws efs describe-file-systems --file-system-id "$fs" | jqget "['FileSystems'][0]['LifeCycleState']")
	[ "$st" = available ] && break
	sleep 0.2
done
[ "$st" = available ] || fail "file system $fs stuck in $st"
ap=$(aws efs create-access-point --file-system-id "$fs" --client-token cli-ap \
	--posix-user Uid=1000,Gid=1000 \
	--root-directory 'Path=/data,CreationInfo={OwnerUid=1000,OwnerGid=1000,Permissions=0750}' | jqget "['AccessPointId']")
aws efs describe-access-points --file-system-id "$fs" | grep -q "$ap" || fail "access point $ap not listed"
echo "ok: efs $fs access point $ap"

aws ec2 terminate-instances --instance-ids "$i1" "$i2" >/dev/null
aws ec2 wait instance-terminated --instance-ids "$i1" "$i2"
echo "ok: terminated"
echo PASS
