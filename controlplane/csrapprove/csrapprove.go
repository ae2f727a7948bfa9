// Package csrapprove approves the serving-certificate requests of kubelets
// (signer kubernetes.io/kubelet-serving), as EKS's control plane does:
// kubelets run with serverTLSBootstrap, and until their CSR is approved
// and signed `kubectl logs`, `exec` and metrics-server fail against them.
// A request is approved only when it is the node's own and every name and
// address it asks for is its EC2 instance's; any other stays pending for
// an administrator (it is never denied, so a fix of the instance's
// addresses lets the kubelet's next request through).
package csrapprove

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/berth-io/berth/controlplane/cloudnode"
)

// Approver watches CSRs and approves kubelets' serving requests.
type Approver struct {
	Client kubernetes.Interface
	EC2    cloudnode.EC2
	Log    *slog.Logger
}

// errNotNow marks a request that may pass later (the Node has no provider
// ID yet, EC2 failed): it is retried with backoff.
var errNotNow = errors.New("not yet")

// Run approves until ctx ends.
func (a *Approver) Run(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(a.Client, 0)
	csrs := factory.Certificates().V1().CertificateSigningRequests()
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 30*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "kubelet-serving-csr"})
	defer queue.ShutDown()
	enqueue := func(obj any) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && pending(csr) {
			queue.Add(csr.Name)
		}
	}
	if _, err := csrs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		a.Log.Error("watch CSRs", "err", err)
		return
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	go func() { <-ctx.Done(); queue.ShutDown() }()
	for {
		name, quit := queue.Get()
		if quit {
			return
		}
		csr, err := csrs.Lister().Get(name)
		if err == nil && pending(csr) {
			err = a.handle(ctx, csr)
		} else if apierrors.IsNotFound(err) {
			err = nil
		}
		// A refusal stands (a CSR's request cannot change); anything else
		// (no Node yet, EC2, a conflict) is tried again.
		if err == nil || isRefusal(err) || ctx.Err() != nil {
			queue.Forget(name)
		} else {
			a.Log.Info("kubelet serving CSR: retrying", "csr", name, "err", err)
			queue.AddRateLimited(name)
		}
		queue.Done(name)
	}
}

// refusal is a request that is not the node's to make: left pending.
type refusal struct{ reason string }

func (r refusal) Error() string { return r.reason }

func isRefusal(err error) bool { var r refusal; return errors.As(err, &r) }

func pending(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
			return false
		}
	}
	return true
}

func (a *Approver) handle(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) error {
	req, node, err := Check(csr)
	if err != nil {
		a.Log.Warn("kubelet serving CSR left pending", "csr", csr.Name, "requestor", csr.Spec.Username, "reason", err)
		return err
	}
	n, err := a.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		// kubelet asks as it registers: its Node may come a moment later.
		return fmt.Errorf("%w: node %s: %v", errNotNow, node, err)
	}
	inst, err := a.instance(ctx, n)
	if err != nil {
		return err
	}
	if err := matchInstance(req, node, inst); err != nil {
		a.Log.Warn("kubelet serving CSR left pending", "csr", csr.Name, "requestor", csr.Spec.Username, "reason", err)
		return err
	}
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "AutoApproved",
		Message:        "kubelet serving certificate for the names and addresses of EC2 instance " + aws.ToString(inst.InstanceId),
		LastUpdateTime: metav1.Now(),
	})
	if _, err := a.Client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("approve %s: %w", csr.Name, err)
	}
	a.Log.Info("kubelet serving CSR approved", "csr", csr.Name, "node", node, "instance", aws.ToString(inst.InstanceId))
	return nil
}

// instance is the EC2 instance of the Node's provider ID.
func (a *Approver) instance(ctx context.Context, n *corev1.Node) (*ec2types.Instance, error) {
	id, err := cloudnode.InstanceID(n.Spec.ProviderID)
	if err != nil {
		return nil, fmt.Errorf("%w: node %s: %v", errNotNow, n.Name, err)
	}
	inst, err := cloudnode.Lookup(ctx, a.EC2, id)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNotNow, err)
	}
	if inst == nil {
		return nil, refusal{fmt.Sprintf("instance %s of node %s not found", id, n.Name)}
	}
	return inst, nil
}

// Check verifies what a CSR says without the cloud: a kubelet-serving
// request of a node for itself (subject system:node:<name> in
// system:nodes, the requestor the same node), usages only those of a
// serving certificate, DNS names and IPs and nothing else. It returns the
// parsed request and the node's name.
func Check(csr *certificatesv1.CertificateSigningRequest) (*x509.CertificateRequest, string, error) {
	if csr.Spec.SignerName != certificatesv1.KubeletServingSignerName {
		return nil, "", refusal{"signer " + csr.Spec.SignerName}
	}
	node, ok := strings.CutPrefix(csr.Spec.Username, "system:node:")
	if !ok || node == "" || !slices.Contains(csr.Spec.Groups, "system:nodes") {
		return nil, "", refusal{fmt.Sprintf("requestor %q is not a node", csr.Spec.Username)}
	}
	block, _ := pem.Decode(csr.Spec.Request)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, "", refusal{"request is not a PEM CERTIFICATE REQUEST"}
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, "", refusal{"request: " + err.Error()}
	}
	if err := req.CheckSignature(); err != nil {
		return nil, "", refusal{"request signature: " + err.Error()}
	}
	if req.Subject.CommonName != csr.Spec.Username || !slices.Equal(req.Subject.Organization, []string{"system:nodes"}) {
		return nil, "", refusal{fmt.Sprintf("subject %q is not the requestor's", req.Subject)}
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return nil, "", refusal{"request names emails or URIs"}
	}
	if len(req.DNSNames)+len(req.IPAddresses) == 0 {
		return nil, "", refusal{"request names no DNS name or IP"}
	}
	allowed := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth}
	if !slices.Contains(csr.Spec.Usages, certificatesv1.UsageServerAuth) {
		return nil, "", refusal{"usages lack server auth"}
	}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains(allowed, u) {
			return nil, "", refusal{fmt.Sprintf("usage %q is not a serving certificate's", u)}
		}
	}
	return req, node, nil
}

// matchInstance requires the instance to be the node's (its private DNS
// name is the node's name, as EKS names nodes) and every name and address
// in the request to be the instance's.
func matchInstance(req *x509.CertificateRequest, node string, inst *ec2types.Instance) error {
	if aws.ToString(inst.PrivateDnsName) != node {
		return refusal{fmt.Sprintf("instance %s is %q, not node %s", aws.ToString(inst.InstanceId), aws.ToString(inst.PrivateDnsName), node)}
	}
	if inst.State != nil && inst.State.Name != ec2types.InstanceStateNameRunning {
		return fmt.Errorf("%w: instance %s is %s", errNotNow, aws.ToString(inst.InstanceId), inst.State.Name)
	}
	names := []string{aws.ToString(inst.PrivateDnsName), aws.ToString(inst.PublicDnsName)}
	ips := []string{aws.ToString(inst.PrivateIpAddress), aws.ToString(inst.PublicIpAddress), aws.ToString(inst.Ipv6Address)}
	for _, d := range req.DNSNames {
		if d == "" || !slices.Contains(names, d) {
			return refusal{fmt.Sprintf("DNS name %q is not instance %s's", d, aws.ToString(inst.InstanceId))}
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(ips, func(s string) bool { p := net.ParseIP(s); return p != nil && p.Equal(ip) }) {
			return refusal{fmt.Sprintf("IP %s is not instance %s's", ip, aws.ToString(inst.InstanceId))}
		}
	}
	return nil
}
