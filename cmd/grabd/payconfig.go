package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/wechatpay"
)

// The payment providers GRAB_PAY_PROVIDER names.
const (
	providerAlipay  = "alipay"  // Alipay, for the alipay channel
	providerWechat  = "wechat"  // WeChat Pay, for the wechat channel
	providerGateway = "gateway" // the company payment gateway, for every other channel
	providerSim     = "sim"     // the built-in simulator, for every other channel
)

var payProviders = []string{providerAlipay, providerWechat, providerGateway, providerSim}

// Pays reports whether GRAB_PAY_PROVIDER names provider.
func (c Config) Pays(provider string) bool { return slices.Contains(c.PayProviders, provider) }

// AlipaySettings are the Alipay channel's settings.
type AlipaySettings struct {
	AppID          string        // GRAB_ALIPAY_APP_ID
	PrivateKeyFile string        // GRAB_ALIPAY_PRIVATE_KEY_FILE: the app's private key
	PublicKeyFile  string        // GRAB_ALIPAY_PUBLIC_KEY_FILE: Alipay's public key for the app
	Gateway        string        // GRAB_ALIPAY_GATEWAY
	NotifyURL      string        // GRAB_ALIPAY_NOTIFY_URL
	Subject        string        // GRAB_ALIPAY_SUBJECT
	Timeout        time.Duration // GRAB_ALIPAY_TIMEOUT
	// Simulated is the embedded mode without the settings above: the
	// channel is Alipay's simulator, in-process.
	Simulated bool

	// keys are what the key files hold, behind a pointer: a printed Config
	// shows its address only.
	keys *alipayKeys
}

type alipayKeys struct{ private, public []byte }

// config is the client's configuration (the simulated channel has its own).
func (a AlipaySettings) config() alipay.Config {
	return alipay.Config{AppID: a.AppID, PrivateKey: a.keys.private, AlipayPublicKey: a.keys.public, Gateway: a.Gateway,
		NotifyURL: a.NotifyURL, Subject: a.Subject, Timeout: a.Timeout}
}

// WechatSettings are the WeChat Pay channel's settings.
type WechatSettings struct {
	MchID            string        // GRAB_WECHAT_MCHID
	AppID            string        // GRAB_WECHAT_APPID
	Serial           string        // GRAB_WECHAT_SERIAL: the merchant API certificate's serial
	PrivateKeyFile   string        // GRAB_WECHAT_PRIVATE_KEY_FILE: the merchant API private key
	APIv3KeyFile     string        // GRAB_WECHAT_APIV3_KEY_FILE
	PublicKeyFile    string        // GRAB_WECHAT_PUBLIC_KEY_FILE: the WeChat Pay public key
	PublicKeyID      string        // GRAB_WECHAT_PUBLIC_KEY_ID: its PUB_KEY_ID_…
	PlatformCertFile string        // GRAB_WECHAT_PLATFORM_CERT_FILE
	NotifyURL        string        // GRAB_WECHAT_NOTIFY_URL
	BaseURL          string        // GRAB_WECHAT_BASE_URL
	Description      string        // GRAB_WECHAT_DESCRIPTION
	Timeout          time.Duration // GRAB_WECHAT_TIMEOUT
	// Simulated is the embedded mode without the settings above: the
	// channel is WeChat Pay's simulator, in-process.
	Simulated bool

	// keys are what the key files hold, behind a pointer: a printed Config
	// shows its address only.
	keys *wechatKeys
}

type wechatKeys struct{ private, apiV3, public, platformCerts []byte }

// config is the client's configuration (the simulated channel has its own).
func (w WechatSettings) config() wechatpay.Config {
	return wechatpay.Config{MchID: w.MchID, AppID: w.AppID, Serial: w.Serial, PrivateKeyPEM: w.keys.private,
		APIv3Key: w.keys.apiV3, PlatformCertsPEM: w.keys.platformCerts, PublicKeyPEM: w.keys.public, PublicKeyID: w.PublicKeyID,
		BaseURL: w.BaseURL, NotifyURL: w.NotifyURL, Description: w.Description, Timeout: w.Timeout}
}

// setting is one native channel setting: its variable, its flag and where
// it goes. required ones are what makes the channel configured.
type setting struct {
	env, flag, def, usage string
	dst                   *string
	required              bool
}

// nativeSettings are the native channels' settings as given, before checks.
type nativeSettings struct {
	alipay                       AlipaySettings
	wechat                       WechatSettings
	alipayTimeout, wechatTimeout string
	alipayList, wechatList       []setting
}

// nativeFlags defines the native channels' flags, each defaulting to its
// variable. Key material itself never goes through a flag or a variable:
// only the names of the files holding it.
func nativeFlags(fs *flag.FlagSet, env func(k, def string) string) *nativeSettings {
	n := &nativeSettings{}
	a, w := &n.alipay, &n.wechat
	n.alipayList = []setting{
		{"GRAB_ALIPAY_APP_ID", "alipay-app-id", "", "the app's id on Alipay's open platform", &a.AppID, true},
		{"GRAB_ALIPAY_PRIVATE_KEY_FILE", "alipay-private-key-file", "", "file with the app's RSA private key (secret)", &a.PrivateKeyFile, true},
		{"GRAB_ALIPAY_PUBLIC_KEY_FILE", "alipay-public-key-file", "", "file with Alipay's RSA public key for the app", &a.PublicKeyFile, true},
		{"GRAB_ALIPAY_NOTIFY_URL", "alipay-notify-url", "", "public URL Alipay notifies: grabd's /v1/payments/notify/alipay", &a.NotifyURL, true},
		{"GRAB_ALIPAY_GATEWAY", "alipay-gateway", alipay.DefaultGateway, "Alipay's gateway URL", &a.Gateway, false},
		{"GRAB_ALIPAY_SUBJECT", "alipay-subject", "", "order title the payer sees; empty: grab red packet", &a.Subject, false},
		{"GRAB_ALIPAY_TIMEOUT", "alipay-timeout", "5s", "bound of one Alipay call", &n.alipayTimeout, false},
	}
	n.wechatList = []setting{
		{"GRAB_WECHAT_MCHID", "wechat-mchid", "", "WeChat Pay merchant id", &w.MchID, true},
		{"GRAB_WECHAT_APPID", "wechat-appid", "", "the app's AppID bound to the merchant", &w.AppID, true},
		{"GRAB_WECHAT_SERIAL", "wechat-serial", "", "the merchant API certificate's serial number", &w.Serial, true},
		{"GRAB_WECHAT_PRIVATE_KEY_FILE", "wechat-private-key-file", "", "file with the merchant API private key, apiclient_key.pem (secret)", &w.PrivateKeyFile, true},
		{"GRAB_WECHAT_APIV3_KEY_FILE", "wechat-apiv3-key-file", "", "file with the 32-byte APIv3 key (secret)", &w.APIv3KeyFile, true},
		{"GRAB_WECHAT_NOTIFY_URL", "wechat-notify-url", "", "public URL WeChat Pay notifies: grabd's /v1/payments/notify/wechat", &w.NotifyURL, true},
		{"GRAB_WECHAT_PUBLIC_KEY_FILE", "wechat-public-key-file", "", "file with the WeChat Pay public key", &w.PublicKeyFile, false},
		{"GRAB_WECHAT_PUBLIC_KEY_ID", "wechat-public-key-id", "", "the WeChat Pay public key's id, PUB_KEY_ID_…", &w.PublicKeyID, false},
		{"GRAB_WECHAT_PLATFORM_CERT_FILE", "wechat-platform-cert-file", "", "file with WeChat Pay platform certificates", &w.PlatformCertFile, false},
		{"GRAB_WECHAT_BASE_URL", "wechat-base-url", wechatpay.DefaultBaseURL, "WeChat Pay's API v3 base URL", &w.BaseURL, false},
		{"GRAB_WECHAT_DESCRIPTION", "wechat-description", "", "order description the payer sees; empty: grab red packet", &w.Description, false},
		{"GRAB_WECHAT_TIMEOUT", "wechat-timeout", "5s", "bound of one WeChat Pay call", &n.wechatTimeout, false},
	}
	for _, s := range append(n.alipayList, n.wechatList...) {
		fs.StringVar(s.dst, s.flag, env(s.env, s.def), s.usage+" ("+s.env+")")
	}
	return n
}

// parsePayProviders reads GRAB_PAY_PROVIDER and the settings of the
// providers it names.
func (c *Config) parsePayProviders(list string, n *nativeSettings) error {
	if strings.TrimSpace(list) == "" {
		list = ""
	}
	for _, name := range strings.Split(list, ",") {
		if name = strings.TrimSpace(name); name == "" {
			if list == "" {
				break
			}
			return fmt.Errorf("GRAB_PAY_PROVIDER: %q has an empty name; they are %s", list, strings.Join(payProviders, ", "))
		}
		if !slices.Contains(payProviders, name) {
			return fmt.Errorf("GRAB_PAY_PROVIDER: %q is not a provider; they are %s", name, strings.Join(payProviders, ", "))
		}
		if c.Pays(name) {
			return fmt.Errorf("GRAB_PAY_PROVIDER: %s is named twice", name)
		}
		c.PayProviders = append(c.PayProviders, name)
	}
	if c.Pays(providerSim) && c.Pays(providerGateway) {
		return errors.New("GRAB_PAY_PROVIDER: sim and gateway both serve every channel; name one of them")
	}
	if c.Pays(providerGateway) {
		if err := c.parseGateway(); err != nil {
			return err
		}
	} else if c.PayURL != "" || c.PayNotifyBase != "" {
		return errors.New("GRAB_PAY_URL and GRAB_PAY_NOTIFY_BASE are for GRAB_PAY_PROVIDER=gateway only")
	}
	var err error
	if c.Alipay, err = n.parseAlipay(c.Pays(providerAlipay), c.Embedded()); err != nil {
		return err
	}
	c.Wechat, err = n.parseWechat(c.Pays(providerWechat), c.Embedded())
	return err
}

// parseGateway checks the settings of the gateway: both URLs and the secret
// are required, in the embedded mode too (the gateway shares it), except
// that the embedded mode without them runs the gateway's simulator.
func (c *Config) parseGateway() error {
	if c.Embedded() && c.PayURL == "" && c.PayNotifyBase == "" {
		return nil
	}
	for _, s := range []struct{ name, v string }{{"GRAB_PAY_URL", c.PayURL}, {"GRAB_PAY_NOTIFY_BASE", c.PayNotifyBase}} {
		if s.v == "" {
			return fmt.Errorf("%s is required with GRAB_PAY_PROVIDER=gateway", s.name)
		}
		if err := httpURL(s.name, s.v); err != nil {
			return err
		}
	}
	if c.PaySecret == "" {
		return errors.New("GRAB_PAY_SECRET is required with GRAB_PAY_PROVIDER=gateway")
	}
	return nil
}

// configured checks a native channel's settings against GRAB_PAY_PROVIDER
// and reads its timeout setting into d: real reports the channel's own
// settings given (required ones missing are an error), else the embedded
// mode simulates it.
func configured(provider string, list []setting, named, embedded bool, timeoutName, timeout string, d *time.Duration) (real bool, err error) {
	var given, missing []string
	for _, s := range list {
		if !s.required {
			continue
		}
		if *s.dst != "" {
			given = append(given, s.env)
		} else {
			missing = append(missing, s.env)
		}
	}
	switch {
	case !named && len(given) > 0:
		return false, fmt.Errorf("%s is set but GRAB_PAY_PROVIDER does not name %s", given[0], provider)
	case !named:
		return false, nil
	}
	if *d, err = positiveDuration(timeoutName, timeout); err != nil || len(given) == 0 && embedded {
		return false, err
	}
	switch {
	case len(missing) == 1:
		return false, fmt.Errorf("%s is required with GRAB_PAY_PROVIDER=%s", missing[0], provider)
	case len(missing) > 1:
		return false, fmt.Errorf("%s are required with GRAB_PAY_PROVIDER=%s", strings.Join(missing, ", "), provider)
	}
	return true, nil
}

// httpURLs checks settings holding URLs, as name, value pairs.
func httpURLs(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := httpURL(pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// readFile reads the file the setting name holds. Errors name the setting
// and the file, never what it holds.
func readFile(name, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: %w", name, err)
	case len(b) == 0:
		return nil, fmt.Errorf("%s: %s is empty", name, path)
	}
	return b, nil
}

// readKey reads a key file and checks that parse reads it.
func readKey[K any](name, path string, parse func([]byte) (K, error)) ([]byte, error) {
	b, err := readFile(name, path)
	if err != nil {
		return nil, err
	}
	if _, err := parse(b); err != nil {
		return nil, fmt.Errorf("%s: %s: %v", name, path, err)
	}
	return b, nil
}

func (n *nativeSettings) parseAlipay(named, embedded bool) (AlipaySettings, error) {
	a := n.alipay
	real, err := configured(providerAlipay, n.alipayList, named, embedded, "GRAB_ALIPAY_TIMEOUT", n.alipayTimeout, &a.Timeout)
	if err != nil || !named {
		return AlipaySettings{}, err
	}
	if a.Simulated = !real; a.Simulated {
		return a, nil
	}
	if err := httpURLs("GRAB_ALIPAY_NOTIFY_URL", a.NotifyURL, "GRAB_ALIPAY_GATEWAY", a.Gateway); err != nil {
		return AlipaySettings{}, err
	}
	a.keys = &alipayKeys{}
	if a.keys.private, err = readKey("GRAB_ALIPAY_PRIVATE_KEY_FILE", a.PrivateKeyFile, alipay.ParsePrivateKey); err != nil {
		return AlipaySettings{}, err
	}
	if a.keys.public, err = readKey("GRAB_ALIPAY_PUBLIC_KEY_FILE", a.PublicKeyFile, alipay.ParsePublicKey); err != nil {
		return AlipaySettings{}, err
	}
	if _, err := alipay.New(a.config()); err != nil {
		return AlipaySettings{}, fmt.Errorf("GRAB_ALIPAY_*: %v", err)
	}
	return a, nil
}

func (n *nativeSettings) parseWechat(named, embedded bool) (WechatSettings, error) {
	w := n.wechat
	real, err := configured(providerWechat, n.wechatList, named, embedded, "GRAB_WECHAT_TIMEOUT", n.wechatTimeout, &w.Timeout)
	if err != nil || !named {
		return WechatSettings{}, err
	}
	if w.Simulated = !real; w.Simulated {
		return w, nil
	}
	if err := httpURLs("GRAB_WECHAT_NOTIFY_URL", w.NotifyURL, "GRAB_WECHAT_BASE_URL", w.BaseURL); err != nil {
		return WechatSettings{}, err
	}
	if (w.PublicKeyFile == "") != (w.PublicKeyID == "") {
		return WechatSettings{}, errors.New("GRAB_WECHAT_PUBLIC_KEY_FILE and GRAB_WECHAT_PUBLIC_KEY_ID go together")
	}
	if w.PublicKeyFile == "" && w.PlatformCertFile == "" {
		return WechatSettings{}, errors.New("GRAB_WECHAT_PUBLIC_KEY_FILE (with GRAB_WECHAT_PUBLIC_KEY_ID) or GRAB_WECHAT_PLATFORM_CERT_FILE is required with GRAB_PAY_PROVIDER=wechat: it verifies WeChat Pay's answers and notifications")
	}
	w.keys = &wechatKeys{}
	if w.keys.private, err = readKey("GRAB_WECHAT_PRIVATE_KEY_FILE", w.PrivateKeyFile, wechatpay.ParsePrivateKey); err != nil {
		return WechatSettings{}, err
	}
	if w.keys.apiV3, err = readFile("GRAB_WECHAT_APIV3_KEY_FILE", w.APIv3KeyFile); err != nil {
		return WechatSettings{}, err
	}
	if w.keys.apiV3 = bytes.TrimRight(w.keys.apiV3, "\r\n"); len(w.keys.apiV3) != 32 {
		return WechatSettings{}, fmt.Errorf("GRAB_WECHAT_APIV3_KEY_FILE: %s holds %d bytes; the APIv3 key is 32", w.APIv3KeyFile, len(w.keys.apiV3))
	}
	if w.PublicKeyFile != "" {
		if w.keys.public, err = readKey("GRAB_WECHAT_PUBLIC_KEY_FILE", w.PublicKeyFile, wechatpay.ParsePublicKey); err != nil {
			return WechatSettings{}, err
		}
	}
	if w.PlatformCertFile != "" {
		if w.keys.platformCerts, err = readKey("GRAB_WECHAT_PLATFORM_CERT_FILE", w.PlatformCertFile, wechatpay.ParseCertificates); err != nil {
			return WechatSettings{}, err
		}
	}
	if _, err := wechatpay.New(w.config()); err != nil {
		return WechatSettings{}, fmt.Errorf("GRAB_WECHAT_*: %v", err)
	}
	return w, nil
}
