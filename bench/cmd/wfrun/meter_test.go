package main

import "testing"

// Only PUT bodies count, however the stream is cut into reads.
func TestReqMeterCountsPutBodies(t *testing.T) {
	stream := "PUT /b/k?partNumber=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789" +
		"POST /b/k?uploads HTTP/1.1\r\ncontent-length: 5\r\n\r\n<xml>" +
		"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n" +
		"PUT /b/k?partNumber=2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
	for _, step := range []int{1, 2, 7, 64, len(stream)} {
		var m reqMeter
		var got int64
		for i := 0; i < len(stream); i += step {
			got += m.feed([]byte(stream[i:min(i+step, len(stream))]))
		}
		if got != 13 {
			t.Fatalf("reads of %d bytes: PUT body bytes = %d, want 13", step, got)
		}
	}
}
