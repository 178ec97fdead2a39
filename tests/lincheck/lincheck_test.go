package lincheck

import (
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The model rejects what a broken store would do: a read that misses an
// acknowledged write, and a CAS that succeeds on a value no longer there.
func TestModelRejectsViolations(t *testing.T) {
	op := func(in Input, out Output, call, ret int64) porcupine.Operation {
		return porcupine.Operation{Input: in, Output: out, Call: call, Return: ret}
	}
	tests := []struct {
		name    string
		history []porcupine.Operation
		want    porcupine.CheckResult
	}{
		{"stale read", []porcupine.Operation{
			op(Input{Op: "put", Key: "k", Value: "1"}, Output{}, 0, 10),
			op(Input{Op: "get", Key: "k"}, Output{Value: ""}, 20, 30),
		}, porcupine.Illegal},
		{"lost update by CAS", []porcupine.Operation{
			op(Input{Op: "put", Key: "k", Value: "1"}, Output{}, 0, 10),
			op(Input{Op: "put", Key: "k", Value: "2"}, Output{}, 20, 30),
			op(Input{Op: "cas", Key: "k", Expected: "1", Value: "3"}, Output{OK: true}, 40, 50),
		}, porcupine.Illegal},
		{"concurrent read may see either", []porcupine.Operation{
			op(Input{Op: "put", Key: "k", Value: "1"}, Output{}, 0, 30),
			op(Input{Op: "get", Key: "k"}, Output{Value: ""}, 10, 20),
			op(Input{Op: "get", Key: "k"}, Output{Value: "1"}, 11, 21),
		}, porcupine.Ok},
		{"unknown put may apply late", []porcupine.Operation{
			op(Input{Op: "put", Key: "k", Value: "1"}, Output{}, 0, math.MaxInt64),
			op(Input{Op: "get", Key: "k"}, Output{Value: ""}, 10, 20),
			op(Input{Op: "get", Key: "k"}, Output{Value: "1"}, 30, 40),
		}, porcupine.Ok},
	}
	for _, tt := range tests {
		if got := porcupine.CheckOperationsTimeout(Model, tt.history, time.Minute); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNotApplied(t *testing.T) {
	for msg, want := range map[string]bool{
		`Put "http://127.0.0.1:1/v1/kv/k": dial tcp 127.0.0.1:1: connect: connection refused`: true,
		"Unexpected response code: 500 (No cluster leader)":                                   true,
		"Unexpected response code: 500 (leadership lost while committing log)":                false,
		"context deadline exceeded (Client.Timeout exceeded while awaiting headers)":          false,
	} {
		if got := NotApplied(errorString(msg)); got != want {
			t.Errorf("NotApplied(%q) = %v, want %v", msg, got, want)
		}
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
