package awsquery

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"net/http"
	"strconv"

	"github.com/berth-io/berth/localcloud/awserr"
)

// EC2Namespace is the XML namespace of EC2 API version 2016-11-15, the one
// every current SDK speaks.
const EC2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// WriteEC2 renders an EC2 response: <ActionResponse xmlns=...><requestId/>
// followed by the fields of body (a struct with xml tags, or nil).
func WriteEC2(w http.ResponseWriter, action, requestID string, body any) {
	type envelope struct {
		XMLName   xml.Name
		Xmlns     string `xml:"xmlns,attr"`
		RequestID string `xml:"requestId"`
		Body      []byte `xml:",innerxml"`
	}
	inner, err := innerXML(body)
	var out []byte
	if err == nil {
		out, err = xml.Marshal(envelope{XMLName: xml.Name{Local: action + "Response"}, Xmlns: EC2Namespace, RequestID: requestID, Body: inner})
	}
	if err != nil {
		WriteEC2Error(w, requestID, awserr.As(fmt.Errorf("encode %s response: %w", action, err)))
		return
	}
	writeXML(w, http.StatusOK, out)
}

// WriteEC2Error renders EC2's error document.
func WriteEC2Error(w http.ResponseWriter, requestID string, e *awserr.Error) {
	type errDoc struct {
		XMLName   xml.Name `xml:"Response"`
		Code      string   `xml:"Errors>Error>Code"`
		Message   string   `xml:"Errors>Error>Message"`
		RequestID string   `xml:"RequestID"`
	}
	out, _ := xml.Marshal(errDoc{Code: e.Code, Message: e.Message, RequestID: requestID})
	writeXML(w, e.Status, out)
}

// WriteQuery renders a response of the generic Query protocol (STS, IAM):
// <ActionResponse xmlns=ns><ActionResult>body</ActionResult><ResponseMetadata>.
func WriteQuery(w http.ResponseWriter, ns, action, requestID string, body any) {
	type result struct {
		XMLName xml.Name
		Body    []byte `xml:",innerxml"`
	}
	type envelope struct {
		XMLName   xml.Name
		Xmlns     string `xml:"xmlns,attr"`
		Result    result
		RequestID string `xml:"ResponseMetadata>RequestId"`
	}
	inner, err := innerXML(body)
	var out []byte
	if err == nil {
		out, err = xml.Marshal(envelope{
			XMLName: xml.Name{Local: action + "Response"}, Xmlns: ns,
			Result:    result{XMLName: xml.Name{Local: action + "Result"}, Body: inner},
			RequestID: requestID,
		})
	}
	if err != nil {
		WriteQueryError(w, ns, requestID, awserr.As(fmt.Errorf("encode %s response: %w", action, err)))
		return
	}
	writeXML(w, http.StatusOK, out)
}

// WriteQueryError renders the generic Query protocol's ErrorResponse.
func WriteQueryError(w http.ResponseWriter, ns, requestID string, e *awserr.Error) {
	typ := "Sender"
	if e.Status >= 500 {
		typ = "Receiver"
	}
	type errDoc struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		Type      string   `xml:"Error>Type"`
		Code      string   `xml:"Error>Code"`
		Message   string   `xml:"Error>Message"`
		RequestID string   `xml:"RequestId"`
	}
	out, _ := xml.Marshal(errDoc{Xmlns: ns, Type: typ, Code: e.Code, Message: e.Message, RequestID: requestID})
	writeXML(w, e.Status, out)
}

// innerXML renders the fields of body (a struct with xml tags) without an
// element of its own, so they become children of the response element.
func innerXML(body any) ([]byte, error) {
	if body == nil {
		return nil, nil
	}
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	if err := enc.EncodeElement(body, xml.StartElement{Name: xml.Name{Local: "x"}}); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if bytes.HasPrefix(b, []byte("<x>")) && bytes.HasSuffix(b, []byte("</x>")) {
		return b[len("<x>") : len(b)-len("</x>")], nil
	}
	return nil, nil // <x></x> collapsed or empty struct
}

func writeXML(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(xml.Header)+len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}
