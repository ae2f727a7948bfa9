package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestJSONFormat(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, Options{Format: "json", Level: "info"})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("attached", "eni", "eni-0abc")
	log.Debug("hidden")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %v: %q", err, buf.String())
	}
	if rec["msg"] != "attached" || rec["eni"] != "eni-0abc" || rec["level"] != "INFO" {
		t.Errorf("unexpected record %v", rec)
	}
}

func TestTextFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, Options{Format: "text", Level: "debug"})
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("visible", "k", "v")
	if got := buf.String(); !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "k=v") {
		t.Errorf("text output %q", got)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{{Format: "xml"}, {Level: "loud"}} {
		if _, err := New(&bytes.Buffer{}, o); err == nil {
			t.Errorf("New(%+v) accepted bad options", o)
		}
	}
}
