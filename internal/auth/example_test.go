package auth_test

import (
	"fmt"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

func Example() {
	// Issue an API token; store only its id and hash.
	token, id := auth.NewToken(auth.PrefixAPI)
	stored := map[string]string{id: auth.Hash(token)}

	// Later, a request presents the token.
	_, gotID, ok := auth.ParseToken(token)
	fmt.Println(ok && auth.Verify(token, stored[gotID]))

	// The route table pairs each route with a Rule; Authorize decides.
	alice := auth.Identity{Kind: auth.KindUser, Name: "alice"}
	facts := auth.Facts{Project: "web", ProjectExists: true, MemberRole: api.RoleOperator}
	fmt.Println(auth.Authorize(alice, auth.In(auth.PermVMPower), facts))
	fmt.Println(auth.Authorize(alice, auth.In(auth.PermVMDelete), facts))
	fmt.Println(auth.Authorize(alice, auth.In(auth.PermVMRead), auth.Facts{Project: "payroll", ProjectExists: true}))
	// Output:
	// true
	// <nil>
	// role operator in project "web" does not allow vm.delete
	// project "payroll" not found
}
