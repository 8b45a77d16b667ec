// # Documents
//
// A profile is one small XML document (at most MaxDocumentSize bytes,
// MaxDepth levels, MaxElements elements; UTF-8; no DTD, namespaces or
// processing instructions). Its root element names its kind:
// <device-profile>, <network-profile>, <user-profile> or
// <application-profile>. The root carries a required name attribute and an
// optional adapt attribute: adapt="false" forbids any adaptation (every
// kind may say so; Merge then sets Constraints.NoAdaptation). Numbers are
// decimal; durations use Go syntax ("150ms", "2s"); flags are empty
// elements whose presence means true.
//
// Parsing is strict: an unknown element or attribute, a leaf repeated, or
// text where elements belong is an error, because a misspelt constraint
// silently ignored would weaken adaptation. Profiles grow by adding
// elements to this schema. Field problems (bad numbers, zero sizes,
// unknown formats, contradictions such as adapt="false" with a list of
// allowed adaptations) are all reported at once, each as a *FieldError
// such as
//
//	pda.xml: device/display/width: -3: must be positive
//
// A device (display required; formats, most preferred first, from
// KnownFormats; omit <formats> to accept any):
//
//	<device-profile name="pda">
//	  <cpu><class>handheld</class><mhz>200</mhz></cpu>
//	  <memory-mb>64</memory-mb>
//	  <display><width>240</width><height>320</height><color-depth>12</color-depth></display>
//	  <formats><format>image/jpeg</format><format>image/png</format></formats>
//	  <max-frame-rate>10</max-frame-rate>
//	</device-profile>
//
// A network (bandwidth in bit/s required; latency is the round-trip time;
// <save-data/> as the HTTP Save-Data hint):
//
//	<network-profile name="wlan-80211b">
//	  <bandwidth-bps>5000000</bandwidth-bps>
//	  <latency>20ms</latency>
//	</network-profile>
//
// A user (patience: tolerable time per object; preferences are flags):
//
//	<user-profile name="default-user">
//	  <patience>2s</patience>
//	  <preferences><grayscale/><save-data/></preferences>
//	</user-profile>
//
// An application (omit <adaptations> to accept all of Adaptations(); use
// adapt="false", not an empty list, to forbid all):
//
//	<application-profile name="viewer">
//	  <adaptations><allow>resize</allow><allow>reencode</allow></adaptations>
//	  <max-frame-rate>15</max-frame-rate>
//	</application-profile>
//
//	<application-profile name="diagnostic-imaging" adapt="false"/>
//
// The built-in examples (Examples, TestbedDevice) describe the paper's
// testbed devices and their nominal networks. The network profile an MWS
// measures live is built by the MWS, not here.
package profiles
