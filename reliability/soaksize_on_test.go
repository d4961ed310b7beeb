//go:build soak

package reliability

// soakSizes: -tags soak runs the herd tests at the full size.
const soakSizes = true
