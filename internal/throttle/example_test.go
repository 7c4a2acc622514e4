package throttle_test

import (
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/internal/throttle"
)

func ExampleLogin() {
	login := throttle.NewLogin(throttle.LoginConfig{FreeFailures: 2})
	keys := []string{"user:alice", "ip:192.0.2.7"}
	for attempt := 1; attempt <= 4; attempt++ {
		if wait, ok := login.Check(keys...); !ok {
			fmt.Printf("attempt %d refused, retry in about %v\n", attempt, wait.Round(time.Second))
			continue
		}
		fmt.Printf("attempt %d: wrong password\n", attempt)
		login.Failure(keys...)
	}
	// Output:
	// attempt 1: wrong password
	// attempt 2: wrong password
	// attempt 3: wrong password
	// attempt 4 refused, retry in about 1s
}

func ExampleLimiter() {
	lim := throttle.NewLimiter(1, 2, time.Minute) // bursts of 2, then 1 a second
	for range 3 {
		ok, _ := lim.Allow("ip:192.0.2.7")
		fmt.Println(ok)
	}
	// Output:
	// true
	// true
	// false
}
